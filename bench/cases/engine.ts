// Engine kernels beside PyTorch in the same run with the same thread count: matmul 1024³, conv2d
// 3×3 64→64 on [16, 64, 32, 32] forward and forward+backward, and the fixed cost of one tiny op
// (what a training step pays per op on top of the kernels). PyTorch runs in a worker process
// (bench/torch/engine.py serve) and the two sides alternate run by run, so both see the same load.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import type { BenchCase, BenchResult } from "../types.js";
import { Generator, conv2d, dispose, keep, noGrad, randn, setNumThreads, tidy, type Tensor } from "../../src/tensor/index.js";

/** This CPU's fp32 peak measured by an FMA loop: 120 GFLOP/s on one core, 236 on two. */
export function peakGflops(threads: number): number {
  const fromEnv = Number(process.env.DDPO_PEAK_GFLOPS);
  if (fromEnv > 0) return fromEnv;
  return threads === 1 ? 120 : threads === 2 ? 236 : 118 * threads;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Seconds per call of `fn` run n times. */
export function timeCalls(fn: () => void, n = 1): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  return Number(process.hrtime.bigint() - t0) / 1e9 / n;
}

/** The PyTorch side: a /usr/bin/python3 worker answering one JSON command per line. */
export class TorchWorker {
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #pending: { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }[] = [];
  #stderr = "";
  #exited: Error | null = null;

  constructor(threads: number) {
    const script = fileURLToPath(new URL("../torch/engine.py", import.meta.url));
    this.#child = spawn("/usr/bin/python3", [script, "serve", String(threads)], { stdio: ["pipe", "pipe", "pipe"] });
    this.#child.stderr.on("data", (d: Buffer) => { this.#stderr = (this.#stderr + d.toString()).slice(-4000); });
    createInterface({ input: this.#child.stdout }).on("line", (line) => {
      const p = this.#pending.shift();
      if (p) p.resolve(JSON.parse(line) as Record<string, unknown>);
    });
    const fail = (why: string) => {
      this.#exited = new Error(`the PyTorch worker (/usr/bin/python3 bench/torch/engine.py) ${why}: ${this.#stderr.trim().split("\n").slice(-1)[0] ?? ""}`);
      for (const p of this.#pending.splice(0)) p.reject(this.#exited);
    };
    this.#child.on("error", (e) => fail(`could not start (${e.message})`));
    this.#child.on("exit", (code) => fail(`exited with code ${code}`));
  }

  call(cmd: { op: string; n?: number }): Promise<Record<string, unknown>> {
    if (this.#exited) return Promise.reject(this.#exited);
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.#child.stdin.write(JSON.stringify(cmd) + "\n");
    });
  }

  /** Mean seconds per call of a PyTorch op run n times. */
  async time(op: string, n = 1): Promise<number> {
    return (await this.call({ op, n })).seconds as number;
  }

  close(): void {
    if (this.#exited) return;
    this.#child.stdin.end(JSON.stringify({ op: "quit" }) + "\n");
  }
}

/**
 * Alternates ours and PyTorch: `warmup` untimed pairs, then `reps` timed pairs; returns each
 * side's median seconds per call (PyTorch's undefined when its worker failed, with the reason).
 */
export async function alternate(
  worker: TorchWorker | null, ours: () => number, torchOp: string, n: number, warmup: number, reps: number,
): Promise<{ ours: number; torch?: number; error?: string }> {
  const mine: number[] = [];
  const theirs: number[] = [];
  let error: string | undefined;
  for (let i = 0; i < warmup + reps; i++) {
    const o = ours();
    let t: number | undefined;
    if (worker && error === undefined) {
      try { t = await worker.time(torchOp, n); } catch (e) { error = (e as Error).message; }
    }
    if (i >= warmup) {
      mine.push(o);
      if (t !== undefined) theirs.push(t);
    }
  }
  return { ours: median(mine), ...(theirs.length ? { torch: median(theirs) } : {}), ...(error ? { error } : {}) };
}

export function ratioResult(
  name: string, unit: string, m: { ours: number; torch?: number; error?: string }, opts: { flop?: number; peak?: number; note?: string } = {},
): BenchResult {
  const ours = opts.flop !== undefined ? opts.flop / m.ours / 1e9 : 1 / m.ours;
  const reference = m.torch === undefined ? undefined : opts.flop !== undefined ? opts.flop / m.torch / 1e9 : 1 / m.torch;
  const notes = [opts.note, m.error && `PyTorch reference failed: ${m.error}`].filter((v): v is string => Boolean(v));
  return {
    name, unit, ours,
    ...(reference !== undefined ? { reference, ratio: ours / reference } : {}),
    ...(opts.flop !== undefined && opts.peak !== undefined ? { peakFraction: ours / opts.peak } : {}),
    ...(notes.length ? { note: notes.join("; ") } : {}),
  };
}

const ms = (s: number | undefined) => (s === undefined ? "—" : `${(s * 1e3).toFixed(2)} ms`);
const us = (s: number | undefined) => (s === undefined ? "—" : `${(s * 1e6).toFixed(2)} µs`);

export const engineBench: BenchCase = {
  name: "engine",
  async run({ quick, threads }) {
    setNumThreads(threads);
    const reps = quick ? 5 : 15;
    const worker = new TorchWorker(threads);
    const g = new Generator(0);
    const made: Tensor[] = [];
    const k = (t: Tensor): Tensor => { made.push(keep(t)); return t; };
    const peak = peakGflops(threads);
    try {
      const a = k(randn([1024, 1024], g));
      const b = k(randn([1024, 1024], g));
      const mm = await alternate(worker, () => timeCalls(() => tidy(() => { a.matmul(b); })), "matmul", 1, 3, reps);

      const x = k(randn([16, 64, 32, 32], g));
      const w = k(randn([64, 64, 3, 3], g).mul(0.05));
      const bias = k(randn([64], g));
      const fwd = await alternate(worker, () => timeCalls(() => tidy(() => { noGrad(() => conv2d(x, w, bias, { padding: 1 })); })), "conv_fwd", 1, 3, reps);
      const [xg, wg, bg] = [x, w, bias].map((t) => k(t.clone()).setRequiresGrad(true)) as [Tensor, Tensor, Tensor];
      const fwdBwd = await alternate(worker, () => timeCalls(() => tidy(() => {
        xg.grad = null; wg.grad = null; bg.grad = null;
        conv2d(xg, wg, bg, { padding: 1 }).sum().backward();
      })), "conv_fwdbwd", 1, 3, reps);

      // Per-op overhead, as a training step runs ops: n ops inside one tidy scope that frees them.
      const p = k(randn([4], g));
      const q = k(randn([4], g));
      const n = quick ? 2000 : 10000;
      const tiny = await alternate(worker, () => {
        const t0 = process.hrtime.bigint();
        tidy(() => { for (let i = 0; i < n; i++) p.add(q); });
        return Number(process.hrtime.bigint() - t0) / 1e9 / n;
      }, "tiny_op", n, 1, 5);
      const pg = k(p.clone()).setRequiresGrad(true);
      const tinyGrad = await alternate(worker, () => {
        const t0 = process.hrtime.bigint();
        tidy(() => { for (let i = 0; i < n / 10; i++) pg.mul(q).sum().backward(); });
        return Number(process.hrtime.bigint() - t0) / 1e9 / (n / 10);
      }, "tiny_autograd", n / 10, 1, 5);

      const convFlop = 2 * 16 * 64 * 32 * 32 * 64 * 9;
      return [
        // Debian's libtorch sends sgemm to OpenBLAS (pthreads build), whose own pool uses every core
        // whatever set_num_threads says (in PyTorch too), so its peak is the all-core one.
        ratioResult("matmul 1024³", "GFLOP/s", mm, {
          flop: 2 * 1024 ** 3, peak: peakGflops(availableParallelism()),
          note: `${ms(mm.ours)} per call here, ${ms(mm.torch)} in PyTorch; OpenBLAS threads over all ${availableParallelism()} cores regardless of --threads, so %peak is of all cores`,
        }),
        ratioResult("conv2d 3×3 64→64 [16,64,32,32] forward", "GFLOP/s", fwd, { flop: convFlop, peak, note: `${ms(fwd.ours)} per call here, ${ms(fwd.torch)} in PyTorch` }),
        ratioResult("conv2d 3×3 64→64 [16,64,32,32] forward+backward", "GFLOP/s", fwdBwd, {
          flop: 3 * convFlop, peak, note: `${ms(fwdBwd.ours)} per call here, ${ms(fwdBwd.torch)} in PyTorch (input, weight and bias gradients: 3× the forward FLOPs)`,
        }),
        ratioResult("tiny op: add of two [4] tensors", "ops/s", tiny, { note: `${us(tiny.ours)} per op here (inside one tidy scope), ${us(tiny.torch)} in PyTorch's Python` }),
        ratioResult("tiny autograd step: (p·q).sum().backward() on [4]", "steps/s", tinyGrad, { note: `${us(tinyGrad.ours)} per step here, ${us(tinyGrad.torch)} in PyTorch's Python` }),
      ];
    } finally {
      worker.close();
      dispose(made);
    }
  },
};
