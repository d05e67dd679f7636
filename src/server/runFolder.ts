// A training run folder (written by src/train/trainer.ts): metrics.jsonl (one JSON object per
// line, from jsonlMetricsLog), validation/step-NNNNNN.png grids, checkpoints/step-NNNNNN/ folders
// (complete once trainer_state.json is there) and final/. Files are found by step number only.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

const STEP_FILE = /^step-(\d+)\.png$/;
const STEP_DIR = /^step-(\d+)$/;

export interface RunFiles {
  validation: { step: number; url: string }[];
  checkpoints: number[];
  final: boolean;
}

export function validationUrl(step: number): string {
  return `/api/run/validation/${step}`;
}

export class RunFolder {
  readonly dir: string;
  readonly metricsFile: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
    if (!existsSync(this.dir) || !statSync(this.dir).isDirectory()) {
      throw new Error(`${this.dir} is not a folder; give --run the outputDir of a training run (it may be empty while the run starts)`);
    }
    this.metricsFile = join(this.dir, "metrics.jsonl");
  }

  files(): RunFiles {
    const list = (sub: string, re: RegExp, ok: (name: string) => boolean) => {
      const root = join(this.dir, sub);
      if (!existsSync(root)) return [];
      const out: number[] = [];
      for (const name of readdirSync(root)) {
        const m = re.exec(name);
        if (m && ok(name)) out.push(Number(m[1]));
      }
      return out.sort((a, b) => a - b);
    };
    const validation = list("validation", STEP_FILE, () => true).map((step) => ({ step, url: validationUrl(step) }));
    const checkpoints = list("checkpoints", STEP_DIR, (name) => existsSync(join(this.dir, "checkpoints", name, "trainer_state.json")));
    return { validation, checkpoints, final: existsSync(join(this.dir, "final")) };
  }

  /** Path of the validation grid of `step`, or null when there is none. */
  validationPath(step: number): string | null {
    if (!Number.isSafeInteger(step) || step < 0) return null;
    const p = join(this.dir, "validation", `step-${String(step).padStart(6, "0")}.png`);
    return existsSync(p) ? p : null;
  }

  /** The run's resolved training config (final/ or the newest checkpoint), when written yet. */
  config(): Record<string, unknown> | null {
    const cands = [join(this.dir, "final", "training_config.json"), ...this.files().checkpoints.reverse().map((s) => join(this.dir, "checkpoints", `step-${String(s).padStart(6, "0")}`, "config.json"))];
    for (const f of cands) {
      if (!existsSync(f)) continue;
      try {
        return JSON.parse(readFileSync(f, "utf8")) as Record<string, unknown>;
      } catch {
        // being written; try the next
      }
    }
    return null;
  }

  /** A tail reader over metrics.jsonl (complete lines only; starts over when the file shrinks). */
  tail(): MetricsTail {
    return new MetricsTail(this.metricsFile);
  }
}

export class MetricsTail {
  #offset = 0;

  constructor(readonly file: string) {}

  /**
   * The records appended since the last call. `reset` is true when the file was replaced or
   * truncated (a new run in the same folder): the caller should drop what it showed.
   */
  poll(maxBytes = 8 << 20): { reset: boolean; records: Record<string, unknown>[] } {
    if (!existsSync(this.file)) return { reset: false, records: [] };
    const size = statSync(this.file).size;
    let reset = false;
    if (size < this.#offset) {
      this.#offset = 0;
      reset = true;
    }
    if (size === this.#offset) return { reset, records: [] };
    const n = Math.min(size - this.#offset, maxBytes);
    const buf = Buffer.alloc(n);
    const fd = openSync(this.file, "r");
    let got = 0;
    try {
      while (got < n) {
        const r = readSync(fd, buf, got, n - got, this.#offset + got);
        if (r === 0) break;
        got += r;
      }
    } finally {
      closeSync(fd);
    }
    // complete lines only: a line being appended right now is read on the next poll
    const end = buf.subarray(0, got).lastIndexOf(0x0a);
    if (end < 0) {
      if (got === maxBytes) this.#offset += got; // one line longer than maxBytes: drop it
      return { reset, records: [] };
    }
    this.#offset += end + 1;
    const records: Record<string, unknown>[] = [];
    for (const line of buf.subarray(0, end).toString("utf8").split("\n")) {
      if (line.trim() === "") continue;
      try {
        const v = JSON.parse(line) as unknown;
        if (v !== null && typeof v === "object" && !Array.isArray(v)) records.push(v as Record<string, unknown>);
      } catch {
        // a corrupt line (e.g. a run killed mid-write) is skipped; the next ones still parse
      }
    }
    return { reset, records };
  }
}
