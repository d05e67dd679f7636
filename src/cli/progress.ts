// Terminal rendering of the library's progress events: one redrawn line on a TTY, plain lines
// (at most one every few seconds) when stderr is a file or a pipe, so logs stay readable.
import { formatDuration } from "../train/events.js";

export interface ProgressOptions {
  /** Where to draw; stderr by default so stdout stays machine-readable (--json). */
  stream?: NodeJS.WriteStream | { write(s: string): boolean; isTTY?: boolean };
  /** Minimum seconds between two non-TTY lines. */
  plainEverySeconds?: number;
  /** Bar width in characters. */
  width?: number;
}

/** A progress bar for one phase of work: `update(done, total, detail)`, then `done()`. */
export class ProgressBar {
  private readonly stream: NonNullable<ProgressOptions["stream"]>;
  private readonly tty: boolean;
  private readonly plainEvery: number;
  private readonly width: number;
  private readonly started = performance.now();
  private lastPlain = -Infinity;
  private lastLine = "";

  constructor(private readonly label: string, opts: ProgressOptions = {}) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = Boolean(this.stream.isTTY);
    this.plainEvery = opts.plainEverySeconds ?? 5;
    this.width = opts.width ?? 20;
  }

  /** Redraws with `done` of `total` units finished; `detail` is appended (e.g. "loss 0.69"). */
  update(done: number, total: number, detail = ""): void {
    const elapsed = (performance.now() - this.started) / 1000;
    const fraction = total > 0 ? Math.min(1, done / total) : 0;
    const eta = done > 0 && total > done ? (elapsed / done) * (total - done) : 0;
    const filled = Math.round(fraction * this.width);
    const bar = "█".repeat(filled) + "░".repeat(this.width - filled);
    const line = `${this.label} ${bar} ${done}/${total} ${formatDuration(elapsed)}` +
      (eta > 0 ? ` eta ${formatDuration(eta)}` : "") + (detail ? `  ${detail}` : "");
    this.lastLine = line;
    if (this.tty) {
      this.stream.write(`\r\x1b[2K${line}`);
    } else if (elapsed - this.lastPlain >= this.plainEvery || done >= total) {
      this.lastPlain = elapsed;
      this.stream.write(`${line}\n`);
    }
  }

  /** Ends the line; `summary` replaces the bar when given. */
  done(summary?: string): void {
    const text = summary ?? this.lastLine;
    if (this.tty) this.stream.write(`\r\x1b[2K${text}\n`);
    else if (summary !== undefined) this.stream.write(`${summary}\n`);
  }
}

/** A one-line message on stderr (the CLI's log channel). */
export function logLine(text: string): void {
  process.stderr.write(`${text}\n`);
}
