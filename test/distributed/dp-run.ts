// The data-parallel test runs: one function per scenario that the test process calls directly
// (one process, the baseline) and train-worker.ts calls in each of N worker processes. Both
// return plain JSON: per-step metrics, final weights, how many events this rank emitted.
import { loadTrainConfig } from "../../src/config/train.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { DpoTrainer } from "../../src/train/trainer.js";
import { TensorPairSource, type PairBatchSource } from "../../src/train/data.js";
import { pretrain, type PretrainModel } from "../../src/train/pretrain.js";
import type { ProcessGroup } from "../../src/distributed/index.js";
import { Generator, randn, tensor, type Tensor } from "../../src/tensor/index.js";
import { TinyDenoiser, TinyLoraDenoiser, brightPairs, encodePrompts } from "../train/tiny.js";

export interface DpoSpec {
  kind: "dpo";
  outputDir: string;
  /** Pairs per step over all processes (split evenly between them). */
  globalBatch: number;
  accumulation: number;
  maxSteps: number;
  checkpointEvery: number;
  resume?: string | false;
  lora?: boolean;
  /** Deal the pairs like a row-interleaving loader (rank r: positions r, r + W, … of each global batch). */
  interleaved?: boolean;
  /** DpoTrainerOptions.gradientReduce / gradientBucketBytes (default: overlapped, 25 MB). */
  gradientReduce?: "overlapped" | "after-backward";
  bucketBytes?: number;
  /** This rank SIGKILLs itself when asked for this batch index (the dead-rank test). */
  killRank?: number;
  killAtBatch?: number;
}

export interface PretrainSpec {
  kind: "pretrain";
  outputDir: string;
  globalBatch: number;
  steps: number;
}

export type Spec = DpoSpec | PretrainSpec;

export interface RunOutput {
  rank: number;
  losses: number[];
  metrics: Record<string, number>[];
  weights: Record<string, number[]>;
  events: number;
}

const weightsOf = (named: [string, Tensor][]): Record<string, number[]> =>
  Object.fromEntries(named.map(([n, p]) => [n, Array.from(p.toFloat32Array())]));

export async function runSpec(spec: Spec, pg?: ProcessGroup): Promise<RunOutput> {
  return spec.kind === "dpo" ? runDpo(spec, pg) : runPretrain(spec, pg);
}

async function runDpo(spec: DpoSpec, pg?: ProcessGroup): Promise<RunOutput> {
  const world = pg?.worldSize ?? 1;
  const rank = pg?.rank ?? 0;
  // rank 1 starts from other weights: only the broadcast from rank 0 makes the ranks agree
  const model = spec.lora ? new TinyLoraDenoiser(rank === 0 ? 0 : 7) : new TinyDenoiser(3, 16, rank === 0 ? 0 : 7);
  if (spec.lora && rank !== 0) (model as TinyLoraDenoiser).lora_up.weight.copy_(randn([3, 2, 1, 1], new Generator(5)));
  const batch = spec.globalBatch / world;
  const source = new TensorPairSource(brightPairs(16, 8, 42), batch, 1, pg ? { rank, worldSize: world } : undefined);
  let data: PairBatchSource = source;
  if (spec.interleaved && pg) {
    const whole = new TensorPairSource(brightPairs(16, 8, 42), spec.globalBatch, 1);
    const mine = Array.from({ length: batch }, (_, j) => j * world + rank);
    const rows = tensor(new BigInt64Array([...mine, ...mine.map((j) => j + spec.globalBatch)].map(BigInt)), [2 * batch]);
    data = {
      batchSize: batch,
      shard: { rank, worldSize: world, layout: "interleaved" },
      batch: (i) => {
        const b = whole.batch(i);
        const pixels = b.pixels.indexSelect(0, rows);
        b.pixels.dispose();
        return { prompts: mine.map((j) => b.prompts[j]!), pixels };
      },
    };
  }
  if (spec.killRank === rank) {
    data = {
      batchSize: batch,
      shard: source.shard,
      batch: (i) => {
        if (i === spec.killAtBatch) process.kill(process.pid, "SIGKILL");
        return source.batch(i);
      },
    };
  }
  const config = loadTrainConfig({
    flags: {
      seed: 3, batchSize: batch, gradientAccumulation: spec.accumulation, maxSteps: spec.maxSteps, beta: 2000,
      learningRate: 1e-3, scaleLr: false, warmupSteps: 0, lrSchedule: "constant", promptDropout: 0.3,
      checkpointEvery: spec.checkpointEvery, keepCheckpoints: 0, outputDir: spec.outputDir, resume: spec.resume ?? false,
      finetune: spec.lora ? "lora" : "full",
    },
  });
  let events = 0;
  const trainer = new DpoTrainer({
    config, model, encodePrompts, schedule: new NoiseSchedule(), data,
    ...(spec.lora ? { adapters: (model as TinyLoraDenoiser).adapters() } : {}),
    ...(pg ? { processGroup: pg } : {}),
    ...(spec.gradientReduce ? { gradientReduce: spec.gradientReduce } : {}),
    ...(spec.bucketBytes ? { gradientBucketBytes: spec.bucketBytes } : {}),
    onEvent: () => events++,
  });
  const result = await trainer.run();
  trainer.dispose();
  source.dispose();
  return {
    rank,
    losses: result.history.map((h) => h.metrics.loss),
    metrics: result.history.map((h) => ({ ...h.metrics })),
    weights: weightsOf(model.namedParameters()),
    events,
  };
}

function runPretrain(spec: PretrainSpec, pg?: ProcessGroup): RunOutput {
  const world = pg?.worldSize ?? 1;
  const rank = pg?.rank ?? 0;
  const net = new TinyDenoiser(3, 16, rank === 0 ? 0 : 7);
  const model: PretrainModel = {
    modules: { unet: net },
    schedule: new NoiseSchedule(),
    encodePrompts,
    predict: (x, t, c) => net.forward(x, t, c),
  };
  const n = 12;
  const size = 8;
  const pixels = new Uint8Array(n * size * size * 3).map((_, i) => (i * 37 + (i >> 5) * 11) % 256);
  let events = 0;
  const r = pretrain({
    model, data: { pixels, captions: Array.from({ length: n }, (_, i) => `emoji ${i % 5}`), size },
    steps: spec.steps, batchSize: spec.globalBatch / world, lr: 2e-3, warmupSteps: 0, lrSchedule: "constant",
    emaDecay: 0.9, promptDropout: 0.3, seed: 4, out: spec.outputDir, logEvery: 1,
    ...(pg ? { processGroup: pg } : {}),
    onEvent: () => events++,
  });
  const out = { rank, losses: r.losses.map(([, l]) => l), metrics: [], weights: weightsOf(net.namedParameters()), events };
  for (const t of r.ema.values()) t.dispose();
  return out;
}
