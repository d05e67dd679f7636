// Pretraining: the plain denoising objective on (image, caption) data, as DDPM/Stable Diffusion
// train it. One visible loop (nanoGPT style):
//
//   for step in [start, steps):
//     batch ← weighted draw of `batchSize` items (stateless: a function of (seed, step))
//     captions ← "" with probability promptDropout (so classifier-free guidance works at sampling)
//     t ~ U{0 … T−1}, ε ~ N(0, I)  per sample   (torch generator seeded from (seed, step))
//     x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε
//     loss = mean((model(x_t, t, text(captions)) − target)²)   target = ε, v or x0 by the schedule
//     backward; clip the global gradient norm; AdamW step at lr(step) (warmup, then cosine)
//     EMA: θ_ema ← θ_ema + (1 − d)·(θ − θ_ema), d = min(emaDecay, (1 + step)/(10 + step))
//
// Every random draw is a function of (seed, step), so a run resumed from a checkpoint (weights,
// EMA weights, AdamW moments) continues bit for bit as the uninterrupted run would.
//
// Text conditioning: whatever `model.encodePrompts` computes. For the shipped emoji model the tiny
// CLIP text encoder is trained jointly with the UNet: a frozen random encoder gives captions that
// the UNet can only partly tell apart, and a pretrained CLIP does not fit in a few MB.
//
// Checkpoints (train/checkpoint.ts writeCheckpointFolder: a temporary folder renamed into place, newest N kept):
//   <out>/checkpoints/step-000500/{weights,ema,optimizer}.safetensors + state.json
//
// Data parallel (`processGroup`, docs/distributed.md): batchSize is per process; every rank draws
// the global batch of batchSize × worldSize (indices, caption coins, t, ε: the same draws as one
// process with that batch) and trains on its contiguous slice; parameters are broadcast from
// rank 0 at the start and gradients averaged (bucketed all-reduce) after backward, so all ranks
// stay identical. Only rank 0 emits events and writes checkpoints; resume needs the same world size.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Rng, hashInts } from "../data/random.js";
import { addNoise, trainingTarget } from "../diffusion/noising.js";
import { NoiseSchedule } from "../diffusion/schedule.js";
import { encodePrompts, type TextToImageModel } from "../models/pipeline.js";
import { readSafetensorsSync, writeSafetensorsSync } from "../io/safetensors.js";
import { jsonCheckpointFile, latestCheckpoint as latestCheckpointFolder, writeCheckpointFolder, type CheckpointFile } from "./checkpoint.js";
import type { Module } from "../nn/module.js";
import { AdamW, clipGradNorm } from "../optim/optimizer.js";
import { lrAt, type LrScheduleKind } from "../optim/schedule.js";
import { Generator, keep, noGrad, randint, randn, tidy, type Tensor } from "../tensor/index.js";
import { pixelsToTensor } from "../tensor/pixels.js";
import type { ProcessGroup } from "../distributed/process-group.js";

/** What pretraining needs from a text-to-image model. */
export interface PretrainModel {
  /** The trained modules by prefix (e.g. { unet, text_encoder }); all their trainable parameters learn. */
  modules: Record<string, Module>;
  schedule: NoiseSchedule;
  /** Text conditioning [B, L, D] for prompts, computed with the modules above (gradients flow). */
  encodePrompts(prompts: string[]): Tensor;
  /** The network's raw output for x_t at timesteps t [B] (i64) under conditioning. */
  predict(xt: Tensor, t: Tensor, cond: Tensor): Tensor;
}

/** Images and captions to train on. */
export interface PretrainData {
  /** Uint8 RGB [count, size, size, 3]. */
  pixels: Uint8Array;
  captions: string[];
  size: number;
  /** Relative sampling weight per item (default uniform). */
  weights?: number[];
}

export interface PretrainOptions {
  model: PretrainModel;
  data: PretrainData;
  /** Total optimizer steps (a resumed run continues up to this). */
  steps: number;
  batchSize?: number;
  lr?: number;
  lrSchedule?: LrScheduleKind;
  warmupSteps?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  /** EMA decay; 0 turns EMA off. Default 0.999. */
  emaDecay?: number;
  /** Probability of replacing a caption with "" (default 0.1). */
  promptDropout?: number;
  seed?: number;
  /** Output folder for checkpoints; none written when absent. */
  out?: string;
  /** Checkpoint every n steps (and at the end); 0 = only at the end. */
  checkpointEvery?: number;
  /** Keep the newest n checkpoints (default 2). */
  keepCheckpoints?: number;
  /** true: resume from the newest checkpoint under `out` if one exists; a path: from that checkpoint. */
  resume?: boolean | string;
  /** Steps between "step" events' loss averages (default 10). */
  logEvery?: number;
  onEvent?: (e: PretrainEvent) => void;
  /** Stop early (e.g. Ctrl-C): checked between steps; a checkpoint is written before returning. */
  shouldStop?: () => boolean;
  /** Data-parallel training across the group (batchSize per process; events on rank 0 only). */
  processGroup?: ProcessGroup;
}

export type PretrainEvent =
  | { type: "start"; step: number; totalSteps: number; parameters: number; items: number; resumedFrom: string | null }
  | {
      type: "step";
      step: number;
      totalSteps: number;
      /** Mean loss over the steps since the last event. */
      loss: number;
      lr: number;
      gradNorm: number;
      imagesPerSecond: number;
      elapsedSeconds: number;
      etaSeconds: number;
    }
  | { type: "checkpoint"; step: number; path: string }
  | { type: "done"; step: number; seconds: number; loss: number };

export interface PretrainResult {
  step: number;
  /** (step, mean loss) every logEvery steps. */
  losses: [number, number][];
  /** EMA weights keyed "<module>.<param>" (the raw weights when EMA is off); caller disposes. */
  ema: Map<string, Tensor>;
  seconds: number;
}

interface CheckpointState {
  step: number;
  seed: number;
  losses: [number, number][];
  optimizer: { kind: string; steps: Record<string, number>; hyper: Record<string, number | null> };
  emaDecay: number;
  /** Processes of the run that wrote it (absent: 1). */
  worldSize?: number;
}

/** Named trainable parameters of all modules, "<prefix>.<name>". */
export function trainedParameters(model: PretrainModel): [string, Tensor][] {
  const out: [string, Tensor][] = [];
  for (const [prefix, m] of Object.entries(model.modules)) {
    for (const [name, p] of m.trainableParameters()) out.push([`${prefix}.${name}`, p]);
  }
  return out;
}

/** Effective EMA decay at (0-based) step: warms up as (1 + step)/(10 + step), capped at `decay`. */
export function emaDecayAt(step: number, decay: number): number {
  return Math.min(decay, (1 + step) / (10 + step));
}

/** The batch's item indices for a step: weighted sampling with replacement, a function of (seed, step). */
export function batchIndices(seed: number, step: number, batchSize: number, cumulative: Float64Array): number[] {
  const rng = new Rng(hashInts(seed, step, 1));
  const total = cumulative[cumulative.length - 1]!;
  const out: number[] = [];
  for (let b = 0; b < batchSize; b++) {
    const u = rng.random() * total;
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid]! > u) hi = mid;
      else lo = mid + 1;
    }
    out.push(lo);
  }
  return out;
}

/** The file that makes a pretraining checkpoint folder complete (written last). */
const PRETRAIN_STATE_FILE = "state.json";

/** The newest complete pretraining checkpoint folder under `out`, or null. */
export function latestCheckpoint(out: string): string | null {
  return latestCheckpointFolder(out, PRETRAIN_STATE_FILE);
}

/** Writes <out>/checkpoints/step-N atomically through the trainers' one checkpoint writer (train/checkpoint.ts). */
function saveCheckpoint(
  out: string, step: number, params: [string, Tensor][], ema: Map<string, Tensor> | null, opt: AdamW,
  state: CheckpointState, keepN: number,
): string {
  const os = opt.stateDict();
  const files: CheckpointFile[] = [{ name: "weights.safetensors", write: (path) => writeSafetensorsSync(path, new Map(params)) }];
  if (ema) files.push({ name: "ema.safetensors", write: (path) => writeSafetensorsSync(path, ema) });
  files.push(
    { name: "optimizer.safetensors", write: (path) => writeSafetensorsSync(path, os.tensors) },
    jsonCheckpointFile(PRETRAIN_STATE_FILE, { ...state, optimizer: os.meta }, 1),
  );
  return writeCheckpointFolder({ outputDir: out, step, files, marker: PRETRAIN_STATE_FILE, keep: keepN });
}

function loadCheckpoint(dir: string, params: [string, Tensor][], ema: Map<string, Tensor> | null, opt: AdamW): CheckpointState {
  const statePath = join(dir, "state.json");
  if (!existsSync(statePath)) throw new Error(`cannot resume from ${dir}: no state.json there (an incomplete checkpoint?)`);
  const state = JSON.parse(readFileSync(statePath, "utf8")) as CheckpointState;
  const copyInto = (file: string, into: Iterable<[string, Tensor]>) => {
    const { tensors } = readSafetensorsSync(join(dir, file));
    try {
      noGrad(() => {
        for (const [name, t] of into) {
          const src = tensors.get(name);
          if (src === undefined) throw new Error(`cannot resume from ${dir}: ${file} lacks "${name}"; was it written by a different model config?`);
          if (src.shape.join(",") !== t.shape.join(",")) throw new Error(`cannot resume from ${dir}: "${name}" has shape [${src.shape}] but the model has [${t.shape}]`);
          t.copy_(src);
        }
      });
    } finally {
      for (const t of tensors.values()) t.dispose();
    }
  };
  copyInto("weights.safetensors", params);
  if (ema) {
    if (existsSync(join(dir, "ema.safetensors"))) copyInto("ema.safetensors", ema);
    else noGrad(() => { for (const [n, p] of params) ema.get(n)!.copy_(p); });
  }
  const { tensors } = readSafetensorsSync(join(dir, "optimizer.safetensors"));
  try {
    opt.loadStateDict({ tensors, meta: state.optimizer });
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
  return state;
}

/** Trains `model` on `data` with the denoising loss; see the file comment for the exact loop. */
export function pretrain(opts: PretrainOptions): PretrainResult {
  const { model, data } = opts;
  const batchSize = opts.batchSize ?? 32;
  const baseLr = opts.lr ?? 1e-3;
  const seed = opts.seed ?? 0;
  const emaDecay = opts.emaDecay ?? 0.999;
  const dropout = opts.promptDropout ?? 0.1;
  const logEvery = Math.max(1, opts.logEvery ?? 10);
  const keepN = Math.max(1, opts.keepCheckpoints ?? 2);
  const schedule = { kind: opts.lrSchedule ?? "cosine", warmupSteps: opts.warmupSteps ?? 100, totalSteps: opts.steps };
  const n = data.captions.length;
  const per = data.size * data.size * 3;
  if (!Number.isInteger(opts.steps) || opts.steps < 0) throw new Error(`pretrain: steps must be a non-negative integer, got ${opts.steps}`);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`pretrain: batchSize must be a positive integer, got ${batchSize}`);
  if (!(dropout >= 0 && dropout <= 1)) throw new Error(`pretrain: promptDropout must be in [0, 1], got ${dropout}`);
  if (!(emaDecay >= 0 && emaDecay < 1)) throw new Error(`pretrain: emaDecay must be in [0, 1), got ${emaDecay}`);
  if (n === 0) throw new Error("pretrain: the data set is empty");
  if (data.pixels.length !== n * per) throw new Error(`pretrain: ${n} captions but ${data.pixels.length / per} images of ${data.size}×${data.size}`);
  if (opts.resume && !opts.out && typeof opts.resume !== "string") throw new Error("pretrain: resume needs `out` (the run folder) or a checkpoint path");
  const weights = data.weights ?? new Array<number>(n).fill(1);
  if (weights.length !== n) throw new Error(`pretrain: ${weights.length} weights for ${n} items`);
  const cumulative = new Float64Array(n);
  let acc = 0;
  weights.forEach((w, i) => {
    if (!(w >= 0)) throw new Error(`pretrain: weight of item ${i} is ${w}; weights must be ≥ 0`);
    acc += w;
    cumulative[i] = acc;
  });
  if (!(acc > 0)) throw new Error("pretrain: all sampling weights are 0");

  const pg = opts.processGroup;
  const world = pg?.worldSize ?? 1;
  const rank = pg?.rank ?? 0;
  const isMain = rank === 0;
  for (const m of Object.values(model.modules)) m.train();
  const params = trainedParameters(model);
  // all ranks start from rank 0's module state (parameters, frozen ones too, and buffers), as DDP
  if (pg !== undefined && world > 1) pg.broadcast(Object.values(model.modules).flatMap((m) => [...m.stateDict().values()]), 0);
  const opt = new AdamW(params, { lr: baseLr, weightDecay: opts.weightDecay ?? 0.01 });
  const ema = emaDecay > 0 ? new Map(params.map(([name, p]) => [name, keep(noGrad(() => p.detach().clone()))] as const)) : null;

  let start = 0;
  let losses: [number, number][] = [];
  let resumedFrom: string | null = null;
  if (opts.resume) {
    const dir = typeof opts.resume === "string" ? opts.resume : latestCheckpoint(opts.out!);
    if (dir !== null) {
      const st = loadCheckpoint(dir, params, ema, opt);
      if (st.seed !== seed) throw new Error(`cannot resume from ${dir}: it was trained with seed ${st.seed}, this run uses ${seed}`);
      if ((st.worldSize ?? 1) !== world) {
        throw new Error(`cannot resume from ${dir}: it was written by a run with ${st.worldSize ?? 1} process(es), this run has ${world}; resume with the same number`);
      }
      start = st.step;
      losses = st.losses;
      resumedFrom = dir;
    }
  }
  const emit = (isMain ? opts.onEvent : undefined) ?? (() => {});
  emit({ type: "start", step: start, totalSteps: opts.steps, parameters: params.reduce((a, [, p]) => a + p.size, 0), items: n, resumedFrom });

  const gen = new Generator(seed);
  const T = model.schedule.numTrainTimesteps;
  const t0 = Date.now();
  let windowLoss = 0;
  let windowSteps = 0;
  let windowStart = Date.now();
  let lastGradNorm = 0;
  let step = start;
  const checkpoint = (): void => {
    if (!opts.out || !isMain) return;
    const state: CheckpointState = { step, seed, losses, optimizer: opt.stateDict().meta, emaDecay, ...(world > 1 ? { worldSize: world } : {}) };
    const path = saveCheckpoint(opts.out, step, params, ema, opt, state, keepN);
    emit({ type: "checkpoint", step, path });
  };
  const batchPixels = new Uint8Array(batchSize * per);
  // gradients all-reduced in buckets while backward runs (DDP's overlap, src/distributed/reducer.ts)
  const reducer = pg !== undefined && world > 1 ? pg.createReducer(params.map(([, p]) => p)) : null;
  try {
    while (step < opts.steps) {
      let stop = opts.shouldStop?.() ?? false;
      // data parallel: one rank asked to stop (e.g. its Ctrl-C) → all stop at the same step
      if (opts.shouldStop !== undefined && pg !== undefined && world > 1) stop = pg.allReduceNumbers([stop ? 1 : 0], "max")[0]! > 0;
      if (stop) break;
      // the global batch's draws; this rank keeps its contiguous slice [from, from + batchSize)
      const from = rank * batchSize;
      const globalIdx = batchIndices(seed, step, batchSize * world, cumulative);
      const rng = new Rng(hashInts(seed, step, 2));
      const captions = globalIdx.map((i) => (rng.random() < dropout ? "" : data.captions[i]!)).slice(from, from + batchSize);
      const idx = globalIdx.slice(from, from + batchSize);
      idx.forEach((i, b) => batchPixels.set(data.pixels.subarray(i * per, (i + 1) * per), b * per));
      gen.manualSeed(hashInts(seed, step, 3));
      opt.lr = lrAt(step, baseLr, schedule);
      reducer?.arm();
      let loss = tidy(() => {
        const x0 = pixelsToTensor(batchPixels, batchSize, data.size, data.size);
        let t = randint(0, T, [batchSize * world], gen);
        let noise = randn([batchSize * world, 3, data.size, data.size], gen);
        if (world > 1) {
          t = t.slice(0, from, from + batchSize);
          noise = noise.slice(0, from, from + batchSize);
        }
        const xt = addNoise(model.schedule, x0, noise, t);
        const target = trainingTarget(model.schedule.predictionType, model.schedule, x0, noise, t);
        const cond = model.encodePrompts(captions);
        const pred = model.predict(xt, t, cond);
        const l = pred.sub(target).square().mean();
        l.backward();
        return l.item();
      });
      if (pg !== undefined && world > 1) {
        reducer!.finish();
        loss = pg.allReduceNumbers([loss], "avg")[0]!;
      }
      if (!Number.isFinite(loss)) throw new Error(`pretrain: the loss became ${loss} at step ${step + 1}; lower the learning rate (now ${opt.lr})`);
      lastGradNorm = clipGradNorm(params.map(([, p]) => p), opts.maxGradNorm ?? 1.0);
      opt.step();
      opt.zeroGrad();
      if (ema) {
        const d = emaDecayAt(step, emaDecay);
        noGrad(() => { for (const [name, p] of params) ema.get(name)!.lerp_(p, 1 - d); });
      }
      step++;
      windowLoss += loss;
      windowSteps++;
      if (step % logEvery === 0 || step === opts.steps) {
        const now = Date.now();
        const mean = windowLoss / windowSteps;
        losses.push([step, mean]);
        const elapsed = (now - t0) / 1000;
        const rate = (windowSteps * batchSize * world) / Math.max(1e-3, (now - windowStart) / 1000);
        const done = step - start;
        emit({
          type: "step", step, totalSteps: opts.steps, loss: mean, lr: opt.lr, gradNorm: lastGradNorm,
          imagesPerSecond: rate, elapsedSeconds: elapsed, etaSeconds: done > 0 ? (elapsed / done) * (opts.steps - step) : 0,
        });
        windowLoss = 0;
        windowSteps = 0;
        windowStart = now;
      }
      if (opts.checkpointEvery && step % opts.checkpointEvery === 0 && step < opts.steps) checkpoint();
    }
  } finally {
    reducer?.dispose();
  }
  if (step > start || resumedFrom === null) checkpoint();
  if (pg !== undefined && world > 1) pg.barrier();
  opt.dispose();
  const finalEma = ema ?? new Map(params.map(([name, p]) => [name, keep(noGrad(() => p.detach().clone()))] as const));
  const seconds = (Date.now() - t0) / 1000;
  emit({ type: "done", step, seconds, loss: losses[losses.length - 1]?.[1] ?? NaN });
  return { step, losses, ema: finalEma, seconds };
}

/** Copies EMA weights (keyed "<module>.<param>") into the model's modules. */
export function applyEma(model: PretrainModel, ema: Map<string, Tensor>): void {
  noGrad(() => {
    for (const [name, p] of trainedParameters(model)) {
      const src = ema.get(name);
      if (src === undefined) throw new Error(`EMA weights lack "${name}"`);
      p.copy_(src);
    }
  });
}

/**
 * The PretrainModel view of a pixel-space TextToImageModel: UNet and text encoder trained jointly
 * (pass trainTextEncoder: false to freeze the text encoder).
 */
export function pretrainModelFrom(model: TextToImageModel, opts: { trainTextEncoder?: boolean } = {}): PretrainModel {
  if (model.vae) throw new Error("pretrain: latent models (with a VAE) are not supported yet; pretrain a pixel-space model");
  const train = opts.trainTextEncoder ?? true;
  model.textEncoder.requiresGrad(train);
  const schedule = new NoiseSchedule(model.scheduler);
  return {
    modules: train ? { unet: model.unet, text_encoder: model.textEncoder } : { unet: model.unet },
    schedule,
    encodePrompts: (prompts) => encodePrompts(model, prompts),
    predict: (xt, t, cond) => model.unet.forward(xt, t, cond),
  };
}

/** Loads a checkpoint's weights ("ema", the default, or the raw "weights") into the model. */
export function loadCheckpointWeights(model: PretrainModel, dir: string, which: "ema" | "weights" = "ema"): void {
  const file = join(dir, `${which}.safetensors`);
  if (!existsSync(file)) throw new Error(`${dir} holds no ${which}.safetensors; is it a pretraining checkpoint folder (…/checkpoints/step-NNNNNN)?`);
  const { tensors } = readSafetensorsSync(file);
  try {
    applyEma(model, tensors);
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}
