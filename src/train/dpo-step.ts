// One Diffusion-DPO training step on a batch of N pairs (REFERENCE.md §1):
//
//   1. per PAIR, from the seeded generator: ε ~ N(0, I), t ~ U{0 … T−1}, and a prompt-dropout coin;
//      the chosen and rejected image of a pair share ε, t and the conditioning;
//   2. x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε on the [chosen…, rejected…] batch of 2N, target ε or v;
//   3. policy forward with autograd; reference forward under noGrad (a frozen deep copy for full
//      fine-tuning, the same network with its LoRA adapters off otherwise);
//   4. per-sample errors → the preference loss → backward of loss × lossScale (1/accumulation).
//
// With `overlapBackward` (CPU, one process, ≥ 2 threads) steps 3–4 run over two parts of the
// pairs: the first part's backward runs on a second thread (src/tensor's overlapBackward) while
// this thread issues the second part's forwards, each with half the cores. On 2 cores libtorch's
// intra-op threading of these small ops gains little, and the JavaScript that issues the ops runs
// beside the backward instead of before it.
//
// Pipelined (`prepareNext`; the trainer's default with LoRA from 8 pairs): the second part's
// backward runs behind too, while this thread prepares the NEXT step (prepareStep: its draws from
// the same generator, right after this step's, its encodings and noising, and the reference
// forward of its first part, which the weight update cannot change). The step that consumes it
// then starts straight at its policy forward. Same draws and losses as steps run one by one.
//
// Draw order from the generator per step: noise [N, C, H, W], then timesteps [N], then the dropout
// coins [N] (always drawn, so changing promptDropout does not shift the other streams).
//
// Data parallel (`shard`): every rank draws the randomness of the GLOBAL batch of N × worldSize
// pairs from its copy of the generator (all ranks hold the same generator state) and keeps the
// positions of its own pairs (shard.layout), so each pair gets the t, ε and coin it gets in a
// one-process run with batch N × worldSize, and the generator state stays identical on all ranks
// (one state in checkpoints).
//
// Fixed draws (`pairDraws`, the reference cache of reference-cache.ts): the generator then draws
// only a draw index k ∈ {0 … K−1} per pair (for the global batch, as above), and ε, t and the
// dropout coin come from draw k of the pair, regenerated bit for bit; `cachedReference` then
// supplies Rw, Rl for those draws instead of a reference forward.
import {
  Generator,
  autocast,
  cat,
  getNumThreads,
  keep,
  noGrad,
  overlapBackward,
  rand,
  randint,
  randn,
  tensor,
  tidy,
  type Tensor,
} from "../tensor/index.js";
import type { Module } from "../nn/index.js";
import {
  perSampleErrors,
  preferenceLoss,
  type ReferenceErrors,
  type PreferenceMethod,
  type PreferenceOptions,
} from "../losses/preference.js";
import { addNoise, trainingTarget, type NoiseSchedule, type PredictionType } from "../diffusion/index.js";
import type { TrainingNoising } from "../diffusion/flow/training.js";

/** The prediction types a preference step trains (the official script: ε only; diffusers: ε and v). */
export type TrainPredictionType = "epsilon" | "v_prediction";

/** A denoiser call: noisy input [B, C, H, W], integer timesteps [B], conditioning [B, L, D] → prediction. */
export type DenoisingModel = (x: Tensor, t: Tensor, cond: Tensor) => Tensor;

/**
 * A policy with gradient checkpointing (UNet2DConditionModel.forwardCheckpointed): the prediction
 * computed without an autograd graph, and the backward of a given output gradient.
 */
export type CheckpointedDenoisingModel = (x: Tensor, t: Tensor, cond: Tensor) => { output: Tensor; backward(gradOutput: Tensor): void };

/** A Module with the UNet's forward signature (UNet2DConditionModel, or a tiny stand-in). */
export interface DenoiserModule extends Module {
  /** Per-block gradient checkpointing, when the module has it (see CheckpointedDenoisingModel). */
  forwardCheckpointed?(sample: Tensor, timestep: Tensor, encoderHiddenStates: Tensor): { output: Tensor; backward(gradOutput: Tensor): void };
  /** The module's diffusers config.json, for a final save that loads as a model (optional). */
  diffusersConfig?(): Record<string, unknown>;
  forward(sample: Tensor, timestep: Tensor, encoderHiddenStates: Tensor): Tensor;
}

/** Turns a module into a DenoisingModel. */
export function denoiserOf(m: DenoiserModule): DenoisingModel {
  return (x, t, c) => m.forward(x, t, c);
}

/**
 * The reference of a LoRA run: the same network with its adapters disabled for the call (no
 * second copy in memory). `setEnabled` is src/nn/lora's setLoraEnabled bound to the model.
 */
export function adaptersOffReference(policy: DenoisingModel, setEnabled: (on: boolean) => void): DenoisingModel {
  return (x, t, c) => {
    setEnabled(false);
    try {
      return policy(x, t, c);
    } finally {
      setEnabled(true);
    }
  };
}

export interface StepModels {
  policy: DenoisingModel;
  /**
   * The policy with gradient checkpointing, used instead of `policy` when given: its forward keeps
   * no graph (the reference forward then runs beside block inputs only), and after the loss's
   * backward it backpropagates the prediction's gradient block by block.
   */
  policyCheckpointed?: CheckpointedDenoisingModel;
  /** Run under noGrad. Needed by dpo/hinge/ipo; optional (metrics only) for sft/mapo. */
  reference?: DenoisingModel;
  /**
   * Frozen text encoder: prompts → conditioning [N, L, D]. Called under noGrad, with the batch's
   * per-pair micro-conditioning when it has one (SDXL's time ids; other models ignore it).
   */
  encodePrompts: (prompts: string[], micro?: PairMicroConditioning[]) => Tensor;
  /**
   * Frozen image encoder (the VAE, scaled latents); identity when absent (pixel-space models).
   * `posteriorNoise`, when given, supplies the N(0, I) draw for sampling the posterior (the
   * official script's latent_dist.sample()); without it the encoder returns the posterior mean.
   */
  encodeImages?: (pixels: Tensor, posteriorNoise?: (shape: readonly number[]) => Tensor) => Tensor;
}

/**
 * K fixed (ε, t, dropout coin) draws per pair, keyed by the pair's content (reference-cache.ts's
 * fixedPairDraws): the same key and k give the same draw in every step, rank and run.
 */
export interface PairDraws {
  /** K, the draws per pair. */
  draws: number;
  /** A key per pair of the batch, from its prompt and input (before any encoder). */
  keys(batch: PairBatch): string[];
  /** Draw draws[i] of pair keys[i]: noise [N, ...shape] on `device`, timesteps and coins in [0, 1). */
  sample(keys: string[], draws: number[], shape: readonly number[], device: string): { noisePairs: Tensor; tPairs: number[]; coins: number[] };
}

export interface StepOptions extends PreferenceOptions {
  method: PreferenceMethod;
  /** The DDPM schedule (UNet models). Not needed when `noising` is given. */
  schedule?: NoiseSchedule;
  /**
   * A model family's own noising, used instead of `schedule` (flow matching, src/diffusion/flow:
   * t from its density, x_t = (1−σ)x0 + σε, target ε − x0, float timesteps for the model).
   */
  noising?: TrainingNoising;
  predictionType: TrainPredictionType;
  /** Probability that a pair's caption becomes "" (official: 0.2). */
  promptDropout: number;
  /** The loss is multiplied by this before backward (1/gradientAccumulation). */
  lossScale: number;
  /** bf16 autocast for the forward passes. */
  mixedPrecision?: "no" | "bf16";
  /** This process's part of a data-parallel global batch (see the file comment and DataShard in data.ts). */
  shard?: { rank: number; worldSize: number; layout?: "contiguous" | "interleaved" };
  /** VAE latents: a posterior sample (default, as the official script) or the posterior mean. */
  latentSampling?: "sample" | "mean";
  /** Fixed draws per pair instead of fresh ones from the generator (see the file comment). */
  pairDraws?: PairDraws;
  /**
   * CPU, one process, no checkpointing, ≥ 2 pairs: run the step in two parts of the pairs, the
   * first part's backward on a second thread beside the second part's forwards (overlapBackward in
   * src/tensor), so a step uses two cores' worth of independent work instead of splitting each op.
   * Same gradient up to summation order. Ignored where it does not apply.
   */
  overlapBackward?: boolean;
  /**
   * With overlapBackward: the fraction of the pairs in the first part, whose backward runs behind
   * the second part's forwards (default ½; rounded, each part keeps ≥ 1 pair; the trainer passes
   * balancedOverlapSplit).
   */
  overlapSplit?: number;
  /**
   * Prepares the next step (prepareStep on the next batch, with this generator) during this
   * step's last backward: on the second thread's far side when the step overlaps, after the
   * backward otherwise. Its result comes back as StepResult.next. A pipelined run's last step
   * passes one that returns undefined, so its backward still runs behind, on the same threads as
   * every other step's (a run stopped there and resumed then equals an uninterrupted one).
   */
  prepareNext?: () => PreparedStep | undefined;
  /** With pairDraws: the reference's cached errors of the drawn draws (no reference forward runs). */
  cachedReference?: (keys: string[], draws: number[], tPairs: readonly number[], device: string) => ReferenceErrors;
}

/** A pair's image geometry in pixels (SDXL's add_time_ids: original size, crop top-left, target size). */
export interface PairMicroConditioning {
  originalSize: [number, number];
  cropTopLeft: [number, number];
  targetSize: [number, number];
}

/** One batch: N prompts and 2N images laid out [chosen…, rejected…] (pixels in [−1, 1]). */
export interface PairBatch {
  prompts: string[];
  pixels: Tensor;
  /** Per pair, from the augmentation; both images of a pair share it (they are cropped jointly). */
  micro?: PairMicroConditioning[];
}

export interface StepResult {
  loss: number;
  /** NaN when no reference ran. */
  implicitAcc: number;
  policyMse: number;
  referenceMse: number;
  margin: number;
  /** False when the loss is NaN or ±∞ (backward was not run). */
  finite: boolean;
  pairs: number;
  timesteps: number[];
  promptsDropped: number;
  /** With pairDraws: the draw index used for each pair. */
  draws?: number[];
  /** Present when the step ran in two overlapped parts (StepOptions.overlapBackward). */
  overlapped?: true;
  /** The next step, prepared during this one (StepOptions.prepareNext); the caller runs or frees it. */
  next?: PreparedStep;
}

/** How a model family noises its training inputs: a DDPM schedule and target, or its own process (flow matching). */
export type PairNoisingProcess = TrainingNoising | { schedule: NoiseSchedule; predictionType: PredictionType };

/**
 * x0 [2N, …] laid out [chosen…, rejected…] noised with the same noise (noisePairs [N, …]) and
 * timestep (tPairs, N of them) for both images of a pair: the noisy input, the training target
 * and the model's timestep tensor [2N]. Used by the training step and by implicit-reward accuracy.
 */
export function noisedPairs(
  x0: Tensor, noisePairs: Tensor, tPairs: number[], process: PairNoisingProcess,
): { noisy: Tensor; target: Tensor; tTensor: Tensor } {
  const device = x0.device;
  const noise = cat([noisePairs, noisePairs], 0);
  const t = [...tPairs, ...tPairs];
  if ("schedule" in process) {
    return {
      noisy: addNoise(process.schedule, x0, noise, t),
      target: trainingTarget(process.predictionType, process.schedule, x0, noise, t),
      tTensor: tensor(new BigInt64Array(t.map((v) => BigInt(v))), [t.length], { device }),
    };
  }
  return { noisy: process.noise(x0, noise, t), target: process.target(x0, noise, t), tTensor: process.modelTimesteps(t, device) };
}

/** Runs fn under bf16 autocast when asked (CUDA or CPU by the device). */
export function withAutocast<T>(device: string, mode: "no" | "bf16" | undefined, fn: () => T): T {
  if (mode !== "bf16") return fn();
  return autocast(device.startsWith("cuda") ? "cuda" : "cpu", "bf16", fn);
}

/**
 * The first part's share of the pairs that balances the overlapped phase: the first part's
 * backward (behind) against the second part's policy and reference forwards (here). In units of
 * a policy forward: a reference forward without autograd ≈ 0.8, the backward ≈ 1 with LoRA (input
 * gradients only, the adapters are tiny) and ≈ 2 in full fine-tuning (weight gradients too).
 * Measured on emoji-base, 8 pairs, 2 cores (scripts/perf/overlap-step.ts, medians of 12): LoRA
 * ½ → 1.12×, ⅝ → 1.21–1.32×, ¾ → 1.06× over the one-pass step; full ⅜ and ½ → 1.13×, ⅝ → 0.99×.
 */
export function balancedOverlapSplit(finetune: "lora" | "full", referenceForward: boolean): number {
  const forwards = 1 + (referenceForward ? 0.8 : 0);
  const backward = finetune === "lora" ? 1 : 2;
  return forwards / (forwards + backward);
}

/**
 * The micro-batch size from which the trainer pipelines steps by default. Measured with 2 threads
 * (`npm run bench -- --only dpo`, `--only dpo-sd15`, each against BENCH_NO_PIPELINE=1): emoji-base
 * at 8 pairs gains (LoRA 651–655 → 582–620 ms per step), the tiny SD1.5 UNet at 4 pairs of 16×16
 * latents loses (full fine-tuning 308–331 → 360–386 ms): parts of 1–3 pairs are too small for the
 * second thread to pay for the extra scheduling.
 */
export const PIPELINE_MIN_PAIRS = 8;

/**
 * Whether the trainer pipelines steps when not told (DpoTrainerOptions.pipelineSteps): LoRA with
 * micro-batches of ≥ PIPELINE_MIN_PAIRS pairs. Full fine-tuning's long weight-gradient backward
 * leaves the second thread little to hide: on emoji-base, 8 pairs, its pipelined step was
 * 1.00–1.11× the overlapped one across probe runs (scripts/perf/pipeline-step.ts full) and not
 * faster in the bench, for 0.5 MiB more held between steps, so it stays off there.
 */
export function pipelinesByDefault(finetune: "lora" | "full", pairs: number): boolean {
  return finetune === "lora" && pairs >= PIPELINE_MIN_PAIRS;
}

/**
 * The split of a pipelined step (the trainer's StepOptions.prepareNext): `first`, the first
 * part's share of the pairs, and `prefetched`, the share of the next step's pairs whose reference
 * forward runs during this step's second backward. A pipelined step is three phases:
 *   the first part's policy forward (all threads)
 *   → its backward ∥ the second part's policy forward (and its reference if not prefetched)
 *   → the second part's backward ∥ the next step's prefetched reference.
 * Prefetching the first part's reference balances the last two phases best. Measured on
 * emoji-base, 8 pairs, 2 threads, against the unpipelined overlapped step (scripts/perf/pipeline-step.ts,
 * 5–6 alternating rounds of 4 steps): LoRA ⅝/⅝ 1.09–1.13×, ½/½ 1.06–1.11×, ¾/¾ 0.96×, ⅝ with the
 * whole next reference 0.86×; full ½/½ 1.05–1.11×, ⅜/⅜ 0.88×, ⅝/⅝ 0.92×, ⅜ or ½ with the whole
 * next reference 0.95–0.97×.
 */
export function balancedPipelineSplit(finetune: "lora" | "full"): { first: number; prefetched: number } {
  return finetune === "lora" ? { first: 0.625, prefetched: 0.625 } : { first: 0.5, prefetched: 0.5 };
}

/** Whether a step runs in two overlapped parts (StepOptions.overlapBackward). */
export function overlapsBackward(opts: StepOptions, pairs: number, device: string, models: StepModels): boolean {
  return opts.overlapBackward === true && pairs >= 2 && device === "cpu" && (opts.shard?.worldSize ?? 1) === 1 &&
    models.policyCheckpointed === undefined && getNumThreads() >= 2;
}

/**
 * A step's randomness drawn, its inputs encoded and noised, and the reference's errors of its
 * first `referencePairs` pairs, made ahead by the previous step (StepOptions.prepareNext) while
 * that step's last backward ran. Its tensors live until the step that consumes it ends.
 */
export interface PreparedStep {
  readonly kind: "prepared-step";
  readonly pairs: number;
  readonly device: string;
  readonly noisy: Tensor;
  readonly target: Tensor;
  readonly tTensor: Tensor;
  readonly cond: Tensor;
  readonly tPairs: number[];
  readonly promptsDropped: number;
  /** Pairs [0, referencePairs) have their reference errors here. */
  readonly referencePairs: number;
  readonly reference?: ReferenceErrors;
}

/** What steps 0–2 produce: the noised pairs of a batch, their conditioning and targets. */
interface StepInputs {
  n: number;
  device: string;
  noisy: Tensor;
  target: Tensor;
  tTensor: Tensor;
  cond: Tensor;
  tPairs: number[];
  promptsDropped: number;
  drawIndex?: number[];
  keys?: string[];
}

/** Steps 0–2 of the file comment: latents, the per-pair draws from `gen`, conditioning, noising. */
function stepInputs(models: StepModels, batch: PairBatch, gen: Generator, opts: StepOptions): StepInputs {
  const pixels = batch.pixels;
  const n = batch.prompts.length;
  if (pixels.ndim !== 4 || pixels.shape[0] !== 2 * n) {
    throw new Error(
      `dpoStep: a batch of ${n} prompts needs images [${2 * n}, C, H, W] laid out [chosen…, rejected…]; got [${pixels.shape.join(", ")}]`,
    );
  }
  const device = pixels.device;
  const fixed = opts.pairDraws;
  if (opts.cachedReference !== undefined && fixed === undefined) throw new Error("dpoStep: cachedReference needs pairDraws (the cached errors belong to fixed draws)");
  if (fixed !== undefined && models.encodeImages !== undefined && (opts.latentSampling ?? "sample") === "sample") {
    throw new Error('dpoStep: fixed pair draws need deterministic latents: latentSampling "mean" (a sampled posterior differs every step)');
  }
  // the keys come from the step's input, before any encoder
  const keys = fixed?.keys(batch);
  const world = opts.shard?.worldSize ?? 1;
  const rank = opts.shard?.rank ?? 0;
  const slots = Array.from({ length: n }, (_, j) => (opts.shard?.layout === "interleaved" ? j * world + rank : rank * n + j));
  // this rank's rows of a tensor drawn for the whole global batch
  const ownRows = (all: Tensor, rows: number[]): Tensor =>
    world === 1 ? all : all.indexSelect(0, tensor(new BigInt64Array(rows.map(BigInt)), [rows.length], { device }));
  // 0. latents: the posterior noise is drawn for the whole global batch ([chosen…, rejected…] of
  // n·world each) and this rank takes its rows, so a data-parallel run equals a single process
  const posteriorNoise = (shape: readonly number[]): Tensor =>
    ownRows(randn([2 * n * world, ...shape.slice(1)], gen, { device }), [...slots, ...slots.map((s) => n * world + s)]);
  const sampleLatents = (opts.latentSampling ?? "sample") === "sample";
  // own scope: the encoder's activations are freed before the UNet runs
  const x0 = models.encodeImages
    ? tidy(() => noGrad(() => models.encodeImages!(pixels, sampleLatents ? posteriorNoise : undefined)).detach())
    : pixels;
  const [, c, h, w] = x0.shape as [number, number, number, number];

  // 1. randomness per pair, shared by both images of the pair
  const noising = opts.noising;
  const schedule = opts.schedule;
  if (!noising && !schedule) throw new Error("dpoStep: pass a noise schedule (UNet models) or a noising process (flow models)");
  const T = noising ? noising.numTrainTimesteps : schedule!.numTrainTimesteps;
  let noisePairs: Tensor;
  let tPairs: number[];
  let coins: number[];
  let drawIndex: number[] | undefined;
  if (fixed !== undefined) {
    const globalDraw = randint(0, fixed.draws, [n * world], gen).toArray();
    drawIndex = slots.map((s) => Math.round(globalDraw[s]!));
    ({ noisePairs, tPairs, coins } = fixed.sample(keys!, drawIndex, [c, h, w], device));
  } else {
    const globalNoise = randn([n * world, c, h, w], gen, { device });
    noisePairs = ownRows(globalNoise, slots);
    const globalT = noising ? noising.drawTimesteps(n * world, gen) : randint(0, T, [n * world], gen).toArray();
    tPairs = slots.map((s) => (noising ? globalT[s]! : Math.round(globalT[s]!)));
    const globalCoins = rand([n * world], gen).toArray();
    coins = slots.map((s) => globalCoins[s]!);
  }
  const prompts = batch.prompts.map((p, i) => (coins[i]! < opts.promptDropout ? "" : p));
  const promptsDropped = prompts.filter((p, i) => p === "" && batch.prompts[i] !== "").length;

  const condPairs = noGrad(() => (batch.micro === undefined ? models.encodePrompts(prompts) : models.encodePrompts(prompts, batch.micro))).detach();
  const cond = cat([condPairs, condPairs], 0);

  // 2. noising and target
  const { noisy, target, tTensor } = noisedPairs(
    x0, noisePairs, tPairs, noising ?? { schedule: schedule!, predictionType: opts.predictionType },
  );
  return { n, device, noisy, target, tTensor, cond, tPairs, promptsDropped, ...(drawIndex !== undefined ? { drawIndex } : {}), ...(keys !== undefined ? { keys } : {}) };
}

/** Rows [lo, hi) of the pairs in the [chosen…, rejected…] layout of n pairs, as an index tensor. */
function pairRows(lo: number, hi: number, n: number, device: string): Tensor {
  const idx = Array.from({ length: hi - lo }, (_, i) => lo + i);
  return tensor(new BigInt64Array([...idx, ...idx.map((i) => n + i)].map(BigInt)), [2 * idx.length], { device });
}

/** Model inputs and targets of some pairs, in the [chosen…, rejected…] layout. */
interface PairRowsInputs {
  noisy: Tensor;
  tTensor: Tensor;
  cond: Tensor;
  target: Tensor;
}

/** Pairs [lo, hi) of the step's inputs (the inputs themselves when that is all of them). */
function selectPairs(inputs: StepInputs, lo: number, hi: number): PairRowsInputs {
  if (lo === 0 && hi === inputs.n) return inputs;
  const rows = pairRows(lo, hi, inputs.n, inputs.device);
  return { noisy: inputs.noisy.indexSelect(0, rows), tTensor: inputs.tTensor.indexSelect(0, rows), cond: inputs.cond.indexSelect(0, rows), target: inputs.target.indexSelect(0, rows) };
}

/** The reference's per-pair errors on `x`: a forward under noGrad in its own scope (its prediction is freed once its errors are known). */
function referenceErrorsOf(models: StepModels, x: PairRowsInputs, device: string, opts: StepOptions): ReferenceErrors {
  return tidy(() => {
    const refPred = noGrad(() => withAutocast(device, opts.mixedPrecision, () => models.reference!(x.noisy, x.tTensor, x.cond)));
    const e = perSampleErrors(refPred, x.target);
    return { rw: e.lw, rl: e.ll };
  });
}

/**
 * Draws and encodes the step for `batch` ahead of time and runs the reference on its first
 * `referencePairs` pairs (clamped to the batch): what dpoStep would do first for this batch with
 * this generator state, so the step that consumes it equals one that started from the batch.
 */
export function prepareStep(models: StepModels, batch: PairBatch, gen: Generator, opts: StepOptions, referencePairs: number): PreparedStep {
  if (opts.pairDraws !== undefined || opts.cachedReference !== undefined) throw new Error("prepareStep: not with fixed pair draws or a reference cache (the step then runs no reference forward)");
  if (models.reference === undefined) throw new Error("prepareStep: the models have no reference (nothing to run ahead)");
  const prepared = tidy((): PreparedStep => {
    const inputs = stepInputs(models, batch, gen, opts);
    const m = Math.max(0, Math.min(inputs.n, Math.round(referencePairs)));
    const reference = m > 0 ? tidy(() => referenceErrorsOf(models, selectPairs(inputs, 0, m), inputs.device, opts)) : undefined;
    return {
      kind: "prepared-step", pairs: inputs.n, device: inputs.device, noisy: inputs.noisy, target: inputs.target, tTensor: inputs.tTensor, cond: inputs.cond,
      tPairs: inputs.tPairs, promptsDropped: inputs.promptsDropped, referencePairs: m, ...(reference !== undefined ? { reference } : {}),
    };
  });
  // it outlives this scope and the step that made it; the step that consumes it frees it
  keep([prepared.noisy, prepared.target, prepared.tTensor, prepared.cond, ...(prepared.reference !== undefined ? [prepared.reference.rw, prepared.reference.rl] : [])]);
  return prepared;
}

/** Frees a prepared step's tensors (the trainer does this for one it will not run). */
export function disposePreparedStep(p: PreparedStep): void {
  for (const t of [p.noisy, p.target, p.tTensor, p.cond, p.reference?.rw, p.reference?.rl]) t?.dispose();
}

/** Whether a step's input was prepared ahead (prepareStep) rather than a batch. */
export function isPreparedStep(input: PairBatch | PreparedStep): input is PreparedStep {
  return (input as PreparedStep).kind === "prepared-step";
}

/**
 * Runs the step (forward, loss, backward; no optimizer update) and returns plain numbers: on a
 * batch, or on a step prepared ahead (prepareStep). With `opts.prepareNext` the
 * next step is prepared during this step's last backward (on a second thread when the step
 * overlaps) and returned as `next`.
 */
export function dpoStep(models: StepModels, input: PairBatch | PreparedStep, gen: Generator, opts: StepOptions): StepResult {
  const prepared = isPreparedStep(input) ? input : undefined;
  try {
    return tidy(() => dpoStepIn(models, input, gen, opts));
  } finally {
    if (prepared !== undefined) disposePreparedStep(prepared);
  }
}

function dpoStepIn(models: StepModels, input: PairBatch | PreparedStep, gen: Generator, opts: StepOptions): StepResult {
  const pre = isPreparedStep(input) ? input : undefined;
  if (pre !== undefined && models.reference === undefined) throw new Error("dpoStep: a prepared step needs the models' reference");
  const inputs: StepInputs = pre !== undefined ? { ...pre, n: pre.pairs } : stepInputs(models, input as PairBatch, gen, opts);
  const { n, device, noisy, target, tTensor, cond, tPairs, promptsDropped, drawIndex, keys } = inputs;
  const T = opts.noising ? opts.noising.numTrainTimesteps : opts.schedule!.numTrainTimesteps;

  const mapo = { ...opts.mapo, numTrainTimesteps: opts.mapo?.numTrainTimesteps ?? T };
  // the reference's errors of pairs [lo, hi) (whose inputs are `x`): cached, prepared ahead, or a forward under noGrad
  const cachedAll = opts.cachedReference?.(keys!, drawIndex!, tPairs, device);
  const referenceOf = (lo: number, hi: number, x: PairRowsInputs): ReferenceErrors | undefined => {
    if (cachedAll !== undefined) {
      if (lo === 0 && hi === n) return cachedAll;
      const rows = pairRows(lo, hi, n, device).slice(0, 0, hi - lo);
      return { rw: cachedAll.rw.indexSelect(0, rows), rl: cachedAll.rl.indexSelect(0, rows) };
    }
    if (models.reference === undefined) return undefined;
    // pairs [lo, have) were prepared ahead, the rest run here
    const have = pre?.reference !== undefined ? Math.max(lo, Math.min(hi, pre.referencePairs)) : lo;
    if (have === lo) return referenceErrorsOf(models, x, device, opts);
    const ahead = { rw: pre!.reference!.rw.slice(0, lo, have), rl: pre!.reference!.rl.slice(0, lo, have) };
    if (have === hi) return ahead;
    const rest = tidy(() => referenceErrorsOf(models, selectPairs(inputs, have, hi), device, opts));
    return { rw: cat([ahead.rw, rest.rw], 0), rl: cat([ahead.rl, rest.rl], 0) };
  };
  let next: PreparedStep | undefined;
  let nextDone = false;
  let r: ReturnType<typeof preferenceLoss>;
  let finite: boolean;
  let loss: number;
  const overlapped = overlapsBackward(opts, n, device, models);
  if (overlapped) {
    // 3–4 in two parts of the pairs: the first part's backward runs on a second thread while
    // this one runs the second part's forwards (see overlapBackward). Each part backpropagates
    // its share of the batch mean; the per-pair losses are independent, so the gradient is the
    // whole batch's up to summation order.
    const first = Math.min(n - 1, Math.max(1, Math.round(n * (opts.overlapSplit ?? 0.5))));
    const part = (lo: number, hi: number) => {
      const x = selectPairs(inputs, lo, hi);
      const pol = perSampleErrors(withAutocast(device, opts.mixedPrecision, () => models.policy(x.noisy, x.tTensor, x.cond)), x.target);
      const ref = referenceOf(lo, hi, x);
      const own = preferenceLoss(opts.method, { policy: pol, reference: ref, beta: opts.beta, mapo, sftWeight: opts.sftWeight });
      // this part's share of the batch mean, × lossScale
      const scaled = own.perPair.sum().mul(opts.lossScale / n);
      return { pol, ref, scaled, finite: Number.isFinite(own.loss.item()) };
    };
    // the first part's backward runs behind the second part's forwards; the second's runs here
    const a = part(0, first);
    const b = a.finite ? overlapBackward(a.scaled, () => part(first, n)) : part(first, n);
    finite = a.finite && b.finite;
    // the second part's backward: behind the next step's preparation when there is one
    if (finite) {
      if (opts.prepareNext !== undefined) {
        next = overlapBackward(b.scaled, opts.prepareNext);
        nextDone = true;
      } else {
        b.scaled.backward();
      }
    }
    // the loss and metrics of the whole batch, from both parts' errors in pair order
    r = noGrad(() => preferenceLoss(opts.method, {
      policy: { lw: cat([a.pol.lw, b.pol.lw], 0).detach(), ll: cat([a.pol.ll, b.pol.ll], 0).detach() },
      reference: a.ref !== undefined && b.ref !== undefined ? { rw: cat([a.ref.rw, b.ref.rw], 0), rl: cat([a.ref.rl, b.ref.rl], 0) } : undefined,
      beta: opts.beta, mapo, sftWeight: opts.sftWeight,
    }));
    loss = r.loss.item();
    finite &&= Number.isFinite(loss);
  } else {
    // 3. policy (with autograd) and reference (without)
    const checkpointed = models.policyCheckpointed === undefined
      ? undefined
      : withAutocast(device, opts.mixedPrecision, () => models.policyCheckpointed!(noisy, tTensor, cond));
    // with checkpointing the prediction is a leaf: the loss's backward stops at it
    const pred = checkpointed !== undefined
      ? checkpointed.output.detach().setRequiresGrad(true)
      : withAutocast(device, opts.mixedPrecision, () => models.policy(noisy, tTensor, cond));
    const policy = perSampleErrors(pred, target);
    const reference = referenceOf(0, n, inputs);

    // 4. loss and backward
    r = preferenceLoss(opts.method, { policy, reference, beta: opts.beta, mapo, sftWeight: opts.sftWeight });
    loss = r.loss.item();
    finite = Number.isFinite(loss);
    if (finite) {
      r.loss.mul(opts.lossScale).backward();
      const gradPred = checkpointed !== undefined ? pred.grad : null;
      if (gradPred !== null) withAutocast(device, opts.mixedPrecision, () => checkpointed!.backward(gradPred));
    }
  }
  // the next step's draws follow this step's in the generator, as they would unprepared
  if (!nextDone) next = opts.prepareNext?.();
  const num = (x: Tensor | undefined): number => (x === undefined ? Number.NaN : x.item());
  return {
    loss,
    implicitAcc: num(r.metrics.implicitAcc),
    policyMse: num(r.metrics.policyMse),
    referenceMse: num(r.metrics.referenceMse),
    margin: num(r.metrics.margin),
    finite,
    pairs: n,
    timesteps: tPairs,
    promptsDropped,
    ...(drawIndex !== undefined ? { draws: drawIndex } : {}),
    ...(overlapped ? { overlapped: true as const } : {}),
    ...(next !== undefined ? { next } : {}),
  };
}
