// What the DPO-step cases share: a PyTorch twin served over stdin/stdout (one JSON line per call,
// bench/torch/<script> serve THREADS CONFIG), and a batch source that runs one twin step before
// each of ours, so both sides meet the same machine state (alternation) and our step times are
// measured between the trainer's batch requests.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { liveTensorBytes } from "../src/tensor/index.js";
import type { PairBatchSource } from "../src/train/data.js";
import type { PairBatch } from "../src/train/dpo-step.js";
import type { RatioSpread } from "./types.js";

/**
 * Per-round throughput ratios ours / PyTorch of an alternating run (round i: PyTorch's step i, then
 * ours): theirs[i] / ours[i] in seconds. Undefined when PyTorch gave no steps.
 */
export function pairedRatioSpread(oursSeconds: number[], theirsSeconds: number[]): RatioSpread | undefined {
  const n = Math.min(oursSeconds.length, theirsSeconds.length);
  if (n === 0) return undefined;
  const r = Array.from({ length: n }, (_, i) => theirsSeconds[i]! / oursSeconds[i]!).sort((a, b) => a - b);
  const at = (q: number) => {
    const x = q * (n - 1);
    const lo = Math.floor(x);
    return r[lo]! + (r[Math.min(lo + 1, n - 1)]! - r[lo]!) * (x - lo);
  };
  return { median: at(0.5), min: r[0]!, max: r[n - 1]!, q1: at(0.25), q3: at(0.75), rounds: n };
}

export class TorchTwin {
  readonly #pending: { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }[] = [];
  readonly #child;
  readonly #name: string;
  #err = "";
  #dead: string | null = null;
  /** `script` is a file in bench/torch/; a call not answered within `timeoutMs` fails (default: no limit). */
  constructor(script: string, threads: number, cfg: unknown, readonly timeoutMs?: number) {
    this.#name = `bench/torch/${script}`;
    const path = fileURLToPath(new URL(`./torch/${script}`, import.meta.url));
    // OpenBLAS's pool sized like ours (our binding resizes it with the thread count; torch does not)
    this.#child = spawn("/usr/bin/python3", [path, "serve", String(threads), JSON.stringify(cfg)], {
      stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, OPENBLAS_NUM_THREADS: String(threads) },
    });
    this.#child.stderr.on("data", (d: Buffer) => { this.#err = (this.#err + d.toString()).slice(-2000); });
    // a twin that dies fails every call still waiting for it
    this.#child.on("exit", (code) => {
      this.#dead = `exited with code ${code}: ${this.#err.trim().split("\n").slice(-1)[0] ?? ""}`;
      for (const p of this.#pending.splice(0)) p.reject(new Error(`${this.#name} ${this.#dead}`));
    });
    createInterface({ input: this.#child.stdout }).on("line", (l) => this.#pending.shift()?.resolve(JSON.parse(l) as Record<string, unknown>));
  }
  call(op: string, n = 1): Promise<Record<string, unknown>> {
    if (this.#dead !== null) return Promise.reject(new Error(`${this.#name} ${this.#dead}`));
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      if (this.timeoutMs !== undefined) {
        timer = setTimeout(() => reject(new Error(`${this.#name} did not answer "${op}": ${this.#dead ?? this.#err.split("\n").slice(-2).join(" ")}`)), this.timeoutMs);
      }
      this.#pending.push({ resolve: (v) => { clearTimeout(timer); resolve(v); }, reject: (e) => { clearTimeout(timer); reject(e); } });
      this.#child.stdin.write(JSON.stringify({ op, n }) + "\n");
    });
  }
  close(): void { this.#child.stdin.end(JSON.stringify({ op: "quit" }) + "\n"); }
}

/**
 * Hands the trainer its batches, one twin step before each (alternation), and times our steps:
 * from one step's end to the next (`stepDone`, called from the trainer's step events), less the
 * time spent in `batch` between them (the twin's step and the fetch). A pipelined trainer asks
 * for the next batch inside a step rather than between steps, so step ends, not batch handovers,
 * delimit our steps.
 */
export class AlternatingSource implements PairBatchSource {
  readonly batchSize: number;
  readonly ours: number[] = [];
  readonly theirs: number[] = [];
  /** Our persistent tensor bytes at each step boundary (between optimizer steps). */
  liveBytes = 0;
  error: string | undefined;
  /** The last step's end (or the first batch's handover); null before the first batch. */
  #mark: number | null = null;
  /** Time spent in batch() since #mark. */
  #waited = 0;
  constructor(readonly inner: PairBatchSource, readonly worker: TorchTwin | null) {
    this.batchSize = inner.batchSize;
  }
  async batch(index: number): Promise<PairBatch> {
    const t0 = performance.now();
    this.liveBytes = Math.max(this.liveBytes, liveTensorBytes());
    if (this.worker !== null && this.error === undefined) {
      try {
        this.theirs.push((await this.worker.call("step")).seconds as number);
      } catch (e) {
        this.error = (e as Error).message;
      }
    }
    const b = await this.inner.batch(index);
    if (this.#mark === null) this.#mark = performance.now();
    else this.#waited += performance.now() - t0;
    return b;
  }
  /** A step of ours ended (call it from every step event). */
  stepDone(): void {
    const now = performance.now();
    if (this.#mark !== null) this.ours.push((now - this.#mark - this.#waited) / 1000);
    this.#mark = now;
    this.#waited = 0;
  }
}
