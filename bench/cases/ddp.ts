// Data-parallel DPO: pairs/s with 1 and 2 processes (1 thread each) beside PyTorch DDP
// (torch.distributed, Gloo; bench/torch/ddp.py) doing the same DPO step on the same architecture,
// run after run in the same bench run (ours 1, PyTorch 1, ours 2, PyTorch 2, repeated).
//
// The step, on both sides: the emoji base model's UNet (TINY_UNET_CONFIG at 32×32, the golden
// torch.nn transcription on PyTorch's side), B = 4 pairs per process → 8 images; per pair one t
// and one ε shared by its two images; prompt dropout 0.2 on precomputed conditioning [B, 8, 64];
// policy forward + backward, frozen reference copy forward without grad; per-sample MSE →
// −logσ(−β/2·((Lw−Ll)−(Rw−Rl))) with β 5000; gradients averaged across processes (both sides:
// bucketed all-reduce overlapped with backward — ours src/distributed/reducer.ts, 1 MB first
// bucket then 25 MB, as DDP); metrics
// averaged across processes; clip at 1; AdamW. Ours runs the real DpoTrainer (TensorPairSource
// sharded per rank). pairs/s = pairs over all processes / median step time of rank 0.
//
// This machine has 2 cores shared with other work: 2 processes can at best double 1 process's
// pairs/s, and less when the cores are busy; the ratio to PyTorch in the same run is the figure.
//
// Then the link: a bucket-sized (25 MB f32) all-reduce between two "hosts" — network namespaces
// joined by a veth pair (bench/netns.ts; needs root and iproute2) — and over loopback, ours
// (ProcessGroup.allReduce) beside torch.distributed.all_reduce, both Gloo. MB/s = bucket bytes /
// median time (algorithm bandwidth; with 2 ranks the ring's bus bandwidth is the same number).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchCase, BenchResult } from "../types.js";
import { launchLocal, ProcessGroup, WorkerFailedError, workerExitCode } from "../../src/distributed/index.js";
import { median } from "./engine.js";
import { makeHosts } from "../netns.js";

const PAIRS_PER_PROCESS = 4;
const COND_LEN = 8;
const BETA = 5000;

interface WorkerSpec { warmup: number; steps: number; result: string; unet: unknown; pairsPerProcess: number; condLen: number; beta: number }
interface WorkerResult { seconds: number[]; params: number; worldSize: number }

/** Our worker: one rank of the DpoTrainer run (started by launchLocal with DDPO_BENCH_DDP_WORKER=1). */
async function ourWorker(spec: WorkerSpec): Promise<void> {
  const { Generator, randn, setNumThreads, tensor } = await import("../../src/tensor/index.js");
  const { setInitSeed } = await import("../../src/nn/index.js");
  const { UNet2DConditionModel } = await import("../../src/models/unet/index.js");
  const { EMOJI_UNET_CONFIG } = await import("../../src/datasets/emojiModel.js");
  const { NoiseSchedule } = await import("../../src/diffusion/index.js");
  const { loadTrainConfig } = await import("../../src/config/train.js");
  const { DpoTrainer } = await import("../../src/train/trainer.js");
  const { TensorPairSource } = await import("../../src/train/data.js");
  const pg = ProcessGroup.fromEnvironment({ timeoutMs: 300_000 });
  if (pg === null) setNumThreads(Number(process.env.DDPO_THREADS ?? 1));
  const world = pg?.worldSize ?? 1;
  const rank = pg?.rank ?? 0;
  setInitSeed(0);
  const unet = new UNet2DConditionModel(EMOJI_UNET_CONFIG);
  const g = new Generator(1);
  const m = 16 * world * spec.pairsPerProcess;
  const base = randn([m, 3, 32, 32], g).mul(0.5);
  const pairs = { prompts: Array.from({ length: m }, (_, i) => `pair ${i}`), chosen: base.add(0.1).clamp(-1, 1), rejected: base.sub(0.1).clamp(-1, 1) };
  const data = new TensorPairSource(pairs, spec.pairsPerProcess, 0, pg ? { rank, worldSize: world } : undefined);
  const condGen = new Generator(2);
  const crossDim = EMOJI_UNET_CONFIG.crossAttentionDim as number;
  // a frozen text encoder's output stand-in; "" (dropped prompt) → zeros, as an empty-caption embedding
  const encodePrompts = (prompts: string[]) =>
    randn([prompts.length, spec.condLen, crossDim], condGen).mul(tensor(prompts.map((p) => (p === "" ? 0 : 1)), [prompts.length, 1, 1]));
  const out = mkdtempSync(join(tmpdir(), "ddp-bench-"));
  const config = loadTrainConfig({
    flags: {
      seed: 0, batchSize: spec.pairsPerProcess, maxSteps: spec.warmup + spec.steps + 1, beta: spec.beta, learningRate: 1e-5,
      scaleLr: false, warmupSteps: 0, lrSchedule: "constant", promptDropout: 0.2, checkpointEvery: 0, outputDir: out,
    },
  });
  const trainer = new DpoTrainer({
    config, model: unet, encodePrompts, schedule: new NoiseSchedule(), data, ...(pg ? { processGroup: pg } : {}),
    // stop one step before maxSteps: no final checkpoint or weights to write
    stopAfterSteps: spec.warmup + spec.steps,
  });
  const res = await trainer.run();
  if (rank === 0) {
    const seconds = res.history.slice(spec.warmup).map((h) => (spec.pairsPerProcess * world) / h.metrics.pairsPerSec);
    const r: WorkerResult = { seconds, params: unet.numParameters(), worldSize: world };
    writeFileSync(spec.result, JSON.stringify(r));
  }
  rmSync(out, { recursive: true, force: true });
  pg?.destroy();
}

const BUCKET_BYTES = 25 * 1024 * 1024;

interface AllReduceSpec { mode: "allreduce"; bytes: number; warmup: number; reps: number; result: string }

/** Our all-reduce worker: times `reps` all-reduces of one bucket-sized f32 tensor; rank 0 writes the seconds. */
async function ourAllReduceWorker(spec: AllReduceSpec): Promise<void> {
  const { zeros } = await import("../../src/tensor/index.js");
  const pg = ProcessGroup.fromEnvironment({ timeoutMs: 120_000 });
  if (pg === null) throw new Error("the all-reduce bench worker needs WORLD_SIZE > 1");
  const t = zeros([spec.bytes / 4]);
  const seconds: number[] = [];
  for (let i = 0; i < spec.warmup + spec.reps; i++) {
    pg.barrier();
    const t0 = performance.now();
    pg.allReduce([t], "sum");
    if (i >= spec.warmup) seconds.push((performance.now() - t0) / 1000);
  }
  if (pg.rank === 0) writeFileSync(spec.result, JSON.stringify({ seconds }));
  t.dispose();
  pg.destroy();
}

if (process.env.DDPO_BENCH_DDP_WORKER === "allreduce") {
  try {
    await ourAllReduceWorker(JSON.parse(process.argv[2]!) as AllReduceSpec);
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(workerExitCode(err));
  }
} else if (process.env.DDPO_BENCH_DDP_WORKER === "1") {
  try {
    await ourWorker(JSON.parse(process.argv[2]!) as WorkerSpec);
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(workerExitCode(err));
  }
}

async function job(side: "ours" | "torch", nproc: number, spec: Omit<WorkerSpec, "result">): Promise<WorkerResult> {
  const dir = mkdtempSync(join(tmpdir(), "ddp-bench-result-"));
  const result = join(dir, "rank0.json");
  const args = JSON.stringify({ ...spec, result });
  try {
    await launchLocal(
      side === "ours"
        ? { nproc, args: ["--import", "tsx", fileURLToPath(import.meta.url), args], env: { DDPO_BENCH_DDP_WORKER: "1" }, threadsPerWorker: 1, stdio: "pipe" }
        : { nproc, command: "/usr/bin/python3", args: [TORCH_DDP, args], threadsPerWorker: 1, stdio: "pipe" },
    );
    return JSON.parse(readFileSync(result, "utf8")) as WorkerResult;
  } catch (err) {
    if (err instanceof WorkerFailedError) err.message += `: ${err.stderr.trim().split("\n").slice(-3).join(" | ")}`;
    throw err;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const TORCH_DDP = fileURLToPath(new URL("../torch/ddp.py", import.meta.url));

/** Seconds per bucket all-reduce between 2 ranks, over loopback or between the two namespaces of `hosts`. */
async function allReduceSeconds(side: "ours" | "torch", hosts: ReturnType<typeof makeHosts> | null, quick: boolean): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), "ddp-bench-ar-"));
  const spec: AllReduceSpec = { mode: "allreduce", bytes: BUCKET_BYTES, warmup: 2, reps: quick ? 5 : 10, result: join(dir, "rank0.json") };
  const [command, args] = side === "ours"
    ? [process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), JSON.stringify(spec)]] as const
    : ["/usr/bin/python3", [TORCH_DDP, JSON.stringify(spec)]] as const;
  const threads = { DDPO_THREADS: "1", OMP_NUM_THREADS: "1", OPENBLAS_NUM_THREADS: "1" };
  try {
    if (hosts === null) {
      await launchLocal({ nproc: 2, command, args: [...args], env: { DDPO_BENCH_DDP_WORKER: "allreduce" }, threadsPerWorker: 1, stdio: "pipe" });
    } else {
      // one rank per host, the master on host A (a fresh namespace has every port free)
      // torch's Gloo binds to the address its hostname resolves to, which no namespace has: name
      // the interface (ours finds the one routing to MASTER_ADDR itself)
      await Promise.all([0, 1].map((rank) => hosts.run(rank, command, [...args], {
        ...threads, DDPO_BENCH_DDP_WORKER: "allreduce", MASTER_ADDR: hosts.addrs[0], MASTER_PORT: "29500",
        RANK: String(rank), LOCAL_RANK: "0", WORLD_SIZE: "2", ...(side === "torch" ? { GLOO_SOCKET_IFNAME: hosts.links[rank] } : {}),
      })));
    }
    return (JSON.parse(readFileSync(spec.result, "utf8")) as { seconds: number[] }).seconds;
  } catch (err) {
    if (err instanceof WorkerFailedError) err.message += `: ${err.stderr.trim().split("\n").slice(-3).join(" | ")}`;
    throw err;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const spread = (s: number[]): string => {
  const sorted = [...s].sort((a, b) => a - b);
  return `median ${(median(s) * 1000).toFixed(0)} ms, range ${(sorted[0]! * 1000).toFixed(0)}–${(sorted[sorted.length - 1]! * 1000).toFixed(0)} ms over ${s.length}`;
};

async function linkResults(quick: boolean): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const mbps = (s: number[]) => BUCKET_BYTES / 1e6 / median(s);
  for (const where of ["loopback", "veth"] as const) {
    let hosts: ReturnType<typeof makeHosts> | null = null;
    try {
      if (where === "veth") hosts = makeHosts("ddpb");
      const ours = await allReduceSeconds("ours", hosts, quick);
      let torch: number[] | undefined;
      let torchError: string | undefined;
      try {
        torch = await allReduceSeconds("torch", hosts, quick);
      } catch (err) {
        torchError = (err as Error).message.split("\n")[0];
      }
      results.push({
        name: `all-reduce of one 25 MB bucket, 2 ranks, ${where === "veth" ? "two hosts (netns + veth)" : "loopback"} (gloo)`, unit: "MB/s",
        ours: mbps(ours), ...(torch ? { reference: mbps(torch), ratio: mbps(ours) / mbps(torch) } : {}),
        note: [`ours ${spread(ours)}`, torch ? `PyTorch ${spread(torch)}` : `PyTorch failed: ${torchError}`].join("; "),
      });
    } catch (err) {
      // no root / no iproute2: the step figures above still stand; say why the link figure is missing
      results.push({ name: `all-reduce of one 25 MB bucket, 2 ranks, ${where}`, unit: "MB/s", ours: Number.NaN, note: `not measured: ${(err as Error).message.split("\n")[0]}` });
    } finally {
      hosts?.remove();
    }
  }
  return results;
}

export const ddpBench: BenchCase = {
  name: "ddp",
  async run({ quick }) {
    const { EMOJI_UNET_CONFIG } = await import("../../src/datasets/emojiModel.js");
    const { toDiffusersConfig } = await import("../../src/models/unet/config.js");
    const spec = { warmup: quick ? 1 : 2, steps: quick ? 3 : 6, unet: toDiffusersConfig(EMOJI_UNET_CONFIG), pairsPerProcess: PAIRS_PER_PROCESS, condLen: COND_LEN, beta: BETA };
    const rounds = quick ? 1 : 2;
    const times: Record<string, number[]> = { ours1: [], torch1: [], ours2: [], torch2: [] };
    const errors: string[] = [];
    let params: { ours?: number; torch?: number } = {};
    for (let r = 0; r < rounds; r++) {
      for (const nproc of [1, 2]) {
        for (const side of ["ours", "torch"] as const) {
          try {
            const res = await job(side, nproc, spec);
            times[`${side}${nproc}`]!.push(...res.seconds);
            params = { ...params, [side]: res.params };
          } catch (err) {
            if (side === "ours") throw err;
            errors.push((err as Error).message);
          }
        }
      }
    }
    if (params.torch !== undefined && params.ours !== params.torch) {
      throw new Error(`ddp: ours has ${params.ours} UNet parameters, bench/torch/ddp.py ${params.torch}; keep the architectures identical`);
    }
    const rate = (nproc: number, s: number[]) => (s.length ? (PAIRS_PER_PROCESS * nproc) / median(s) : undefined);
    const results: BenchResult[] = [];
    const ours1 = rate(1, times.ours1!)!;
    const torch1 = rate(1, times.torch1!);
    for (const nproc of [1, 2]) {
      const ours = rate(nproc, times[`ours${nproc}`]!)!;
      const ref = rate(nproc, times[`torch${nproc}`]!);
      const ts = times[`torch${nproc}`]!;
      const notes = [
        `${PAIRS_PER_PROCESS} pairs/process, 1 thread/process, emoji UNet (${params.ours?.toLocaleString("en")} params) + frozen reference, β ${BETA}`,
        `step: ours ${spread(times[`ours${nproc}`]!)}${ts.length ? `, PyTorch ${spread(ts)}` : ""}`,
        nproc === 2 ? `scaling 1→2 processes: ours ${(ours / ours1).toFixed(2)}×, PyTorch DDP ${ref !== undefined && torch1 !== undefined ? (ref / torch1).toFixed(2) : "—"}×` : undefined,
        errors.length ? `PyTorch reference failed: ${errors[0]}` : undefined,
      ].filter((v): v is string => v !== undefined);
      results.push({
        name: `DPO step, data parallel, ${nproc} process${nproc > 1 ? "es" : ""} (gloo)`, unit: "pairs/s", ours,
        ...(ref !== undefined ? { reference: ref, ratio: ours / ref } : {}), note: notes.join("; "),
      });
    }
    results.push(...(await linkResults(quick)));
    return results;
  },
};
