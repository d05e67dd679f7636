// DpoTrainer: the loop, read top to bottom like nanoGPT's — lr, micro-batches with accumulation,
// clip, non-finite check, update, log, checkpoint, validate — over the step in dpo-step.ts.
//
// Exact resume: a checkpoint holds the trainable weights, the optimizer state tensors, the step
// generator's state, the data position (a batch index), the step and the skip counter. A resumed run
// therefore draws the same t, ε and dropout coins and sees the same batches, and reproduces the
// uninterrupted run's per-step losses.
//
// Data parallel (`processGroup`, see docs/distributed.md): every rank runs this same loop on its
// shard of each global batch. Trainable weights are broadcast from rank 0 before the reference is
// copied; the micro-batches before the last accumulate locally (DDP's no_sync) and the last one's
// backward all-reduces gradient buckets as they become ready (src/distributed/reducer.ts, DDP's
// overlap), so every rank applies the same averaged update; the per-pair
// randomness is drawn for the global batch (dpo-step.ts), so W ranks × batch B/W train like one
// process × batch B. Metrics are averaged across ranks; only rank 0 emits events and writes
// checkpoints, validation grids and final weights; a checkpoint holds every rank's data position.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Generator, liveTensorBytes, noGrad, withForegroundTeam, type Tensor } from "../tensor/index.js";
import { AdamW, Adafactor, clipGradNorm, lrAt, type Optimizer } from "../optim/index.js";
import { writeSafetensorsSync } from "../io/safetensors.js";
import { methodNeedsReference } from "../losses/preference.js";
import { configWarnings, effectiveLearningRate, parseTrainConfig, type TrainConfig } from "../config/train.js";
import {
  adaptersOffReference,
  balancedOverlapSplit,
  balancedPipelineSplit,
  denoiserOf,
  disposePreparedStep,
  dpoStep,
  isPreparedStep,
  overlapsBackward,
  pipelinesByDefault,
  prepareStep,
  type DenoiserModule,
  type DenoisingModel,
  type PairBatch,
  type PreparedStep,
  type StepModels,
  type StepOptions,
  type StepResult,
} from "./dpo-step.js";
import {
  REFERENCE_CACHE_FILE,
  ReferenceCache,
  buildReferenceCache,
  fixedPairDraws,
  identityDifferences,
  noisingFingerprint,
  referenceCacheIdentity,
  weightsFingerprint,
} from "./reference-cache.js";
import type { NoiseSchedule } from "../diffusion/index.js";
import type { TrainingNoising } from "../diffusion/flow/training.js";
import { loraMetadata, loraStateDict, setLoraEnabled } from "../nn/lora.js";
import type { Module } from "../nn/index.js";
import type { PairBatchSource } from "./data.js";
import {
  CHECKPOINT_DIR,
  cleanTemporaryCheckpoints,
  decodeBytes,
  encodeBytes,
  latestCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  stepDirName,
  type TrainerState,
} from "./checkpoint.js";
import type { StepMetrics, TrainEvent } from "./events.js";
import { writeImageGrid } from "./validation.js";
import type { ProcessGroup } from "../distributed/process-group.js";

/** LoRA adapters injected into the model (src/nn/lora: setLoraEnabled, loraStateDict bound to it). */
export interface LoraAdapters {
  setEnabled(on: boolean): void;
  /** The adapter weights only (what a checkpoint holds; live tensors). */
  stateDict(): Map<string, Tensor>;
  /** The adapter weights as the final file names them (diffusers' pytorch_lora_weights keys); default stateDict(). */
  exportStateDict?(): Map<string, Tensor>;
  /** safetensors metadata for the final file (diffusers' lora_adapter_metadata: rank, alpha, targets). */
  exportMetadata?(): Record<string, string>;
}

/** LoraAdapters for a module with adapters injected by src/nn/lora's injectLora. */
export function loraAdapters(module: Module): LoraAdapters {
  return {
    setEnabled: (on) => setLoraEnabled(module, on),
    stateDict: () => loraStateDict(module),
    exportStateDict: () => loraStateDict(module, { format: "diffusers" }),
    exportMetadata: () => loraMetadata(module),
  };
}

export interface DpoTrainerOptions {
  config: TrainConfig;
  /** The policy network, trained in place (for LoRA: with adapters injected and the base frozen). */
  model: DenoiserModule;
  /** Required when config.finetune is "lora". */
  adapters?: LoraAdapters;
  /** Frozen text encoder; see StepModels (SDXL: the batch's micro-conditioning comes second). */
  encodePrompts: StepModels["encodePrompts"];
  /**
   * Per-block gradient checkpointing of the policy (the model needs forwardCheckpointed, as
   * UNet2DConditionModel has): less activation memory for a second forward of every block.
   * Gradients equal the plain run's up to float rounding.
   */
  gradientCheckpointing?: boolean;
  /**
   * Each step in two parts of the pairs (balancedOverlapSplit), the first part's backward on a
   * second thread beside the second part's forwards (StepOptions.overlapBackward): CPU, one
   * process, ≥ 2 threads, no checkpointing; ignored elsewhere. Gradients equal the one-pass step's up to float rounding.
   * Default: on.
   */
  overlapBackward?: boolean;
  /**
   * With overlapped steps and a reference forward (one process): each step prepares the next
   * (draws, encodings, part of its reference forward) during its last backward, so the cores stay
   * busy between steps (StepOptions.prepareNext). Same results as unpipelined steps up to float
   * rounding; a resumed run equals an uninterrupted one. Default (undefined): pipelinesByDefault
   * (LoRA, micro-batches of ≥ PIPELINE_MIN_PAIRS pairs); true: whenever the step overlaps; false: off.
   */
  pipelineSteps?: boolean;
  /** Frozen VAE encoder (scaled latents); identity when absent. */
  encodeImages?: (pixels: Tensor, posteriorNoise?: (shape: readonly number[]) => Tensor) => Tensor;
  /** The DDPM schedule (UNet models); flow models pass `noising` instead. */
  schedule?: NoiseSchedule;
  /** A model family's own noising (flow matching: src/diffusion/flow's flowMatchingNoising). */
  noising?: TrainingNoising;
  data: PairBatchSource;
  onEvent?: (e: TrainEvent) => void;
  /**
   * Renders one validation image [3, H, W] in [−1, 1] for a prompt and seed with the given denoiser
   * (synchronous: it runs under noGrad). The same seed is used for the base and the current model.
   */
  sampleValidation?: (denoiser: DenoisingModel, prompt: string, seed: number) => Tensor;
  /**
   * Writes the final weights into `dir` (the pipeline's model-folder writer). Default: LoRA →
   * `pytorch_lora_weights.safetensors` (diffusers' file name); full → `unet/diffusion_pytorch_model.safetensors`.
   */
  saveFinal?: (dir: string, model: DenoiserModule, adapters?: LoraAdapters) => void | Promise<void>;
  /** Processes taking part (data parallel), for the effective batch and lr scaling; default processGroup's world size. */
  processes?: number;
  /**
   * Data-parallel training across the group's processes (src/distributed): `data` must read this
   * rank's shard (its `shard` equal to the group's rank and world size) and config.batchSize is per
   * process. `onEvent` is called on rank 0 only.
   */
  processGroup?: ProcessGroup;
  /**
   * How gradients are averaged across ranks: "overlapped" (default) all-reduces buckets from
   * gradient hooks while the last micro-batch's backward runs, as DDP does; "after-backward" runs
   * one bucketed all-reduce once backward has finished (for a model whose parameters take part in
   * more than one backward of a micro-batch, which the overlapped reducer refuses).
   */
  gradientReduce?: "overlapped" | "after-backward";
  /** Gradient bucket size in bytes (DDP's bucket_cap_mb; default 25 MB, the first bucket 1 MB or this when smaller). */
  gradientBucketBytes?: number;
  /** Stop after this many optimizer steps in this call (interruption tests, time-boxed jobs). */
  stopAfterSteps?: number;
  /** Test seam, passed to saveCheckpoint. */
  afterCheckpointFile?: (name: string) => void;
  /**
   * With config.referenceCache: every training pair once, for building the cache (default the
   * data source's everyPair()). The trainer disposes the pixels.
   */
  referencePairs?: () => Iterable<PairBatch> | AsyncIterable<PairBatch>;
  /** With config.referenceCache: a description of the data (path, settings) kept in the cache's identity. */
  referenceCacheData?: string;
}

export interface TrainResult {
  step: number;
  /** Per-step metrics of this call, in order. */
  history: { step: number; metrics: StepMetrics }[];
  finalPath: string | null;
  lastCheckpoint: string | null;
  skippedSteps: number;
}

/** A non-finite loss or gradient stopped the run; the last good checkpoint is kept. */
export class NonFiniteError extends Error {
  override name = "NonFiniteError";
  constructor(readonly step: number, readonly what: string, readonly lastCheckpoint: string | null, cfg: TrainConfig) {
    super(
      `non-finite ${what} at step ${step}: training stopped without applying this update. ` +
        `The last good checkpoint is ${lastCheckpoint ?? "none (no checkpoint was written yet)"}. ` +
        `Likely causes: beta too large for the scale of the errors (beta = ${cfg.beta}; try a smaller one), ` +
        `a learning rate too high (learningRate = ${cfg.learningRate}${cfg.scaleLr ? " × effective batch" : ""}), ` +
        `or reduced-precision overflow (mixedPrecision = "${cfg.mixedPrecision}"; fp16 is known to overflow, try "no"). ` +
        `Set onNonFinite: "skip" to skip such steps and count them instead.`,
    );
  }
}

const WRITER = "diffusion-dpo 0.1.0";

export class DpoTrainer {
  readonly config: TrainConfig;
  #opts: DpoTrainerOptions;
  #reference: DenoiserModule | null = null;
  /** Set when the reference copy was freed after building the reference cache: its weights' fingerprint. */
  #freedReference: string | null = null;
  #fingerprint: string | null = null;
  #optimizer: Optimizer | null = null;

  constructor(opts: DpoTrainerOptions) {
    this.config = parseTrainConfig(opts.config, "DpoTrainer config");
    this.#opts = opts;
    if (this.config.finetune === "lora" && opts.adapters === undefined) {
      throw new Error('config.finetune is "lora" but no LoRA adapters were given: inject them (src/nn/lora injectLora) and pass `adapters`');
    }
    if (opts.data.batchSize !== this.config.batchSize) {
      throw new Error(`the data source yields ${opts.data.batchSize} pairs per batch but config.batchSize is ${this.config.batchSize}`);
    }
    const pg = opts.processGroup;
    const world = pg?.worldSize ?? 1;
    if (pg !== undefined && opts.processes !== undefined && opts.processes !== world) {
      throw new Error(`processes is ${opts.processes} but the process group has ${world} processes; leave processes out`);
    }
    const shard = opts.data.shard;
    if (world > 1 && (shard === undefined || shard.rank !== pg!.rank || shard.worldSize !== world)) {
      throw new Error(
        `data-parallel rank ${pg!.rank} of ${world}: the data source must read this rank's shard ` +
          `(give it { rank: ${pg!.rank}, worldSize: ${world} }); it ${shard === undefined ? "reads all the data" : `reads shard ${shard.rank} of ${shard.worldSize}`}`,
      );
    }
    if (pg === undefined && shard !== undefined && shard.worldSize > 1) {
      throw new Error(`the data source reads shard ${shard.rank} of ${shard.worldSize} but no processGroup was given to the trainer`);
    }
    if (this.config.referenceCache !== undefined) {
      // the draws are keyed by pair content, so ranks would agree; building the cache across ranks is not written yet
      if (world > 1) throw new Error("referenceCache (--reference-cache) trains in one process for now; leave --nproc out or drop the reference cache");
      if (opts.encodeImages !== undefined && this.config.latentSampling === "sample") {
        throw new Error(
          'referenceCache (--reference-cache) needs the same latents for a pair every step: set latentSampling "mean" (--latents mean) ' +
            "or train from a training cache (`diffusion-dpo cache`)",
        );
      }
      if (opts.referencePairs === undefined && opts.data.everyPair === undefined) {
        throw new Error("referenceCache: the data source cannot list every pair once (no everyPair()); pass referencePairs");
      }
    }
  }

  /** Rank 0 (or a single process): the one that emits events and writes files. */
  get #isMain(): boolean {
    return (this.#opts.processGroup?.rank ?? 0) === 0;
  }

  /** The frozen reference module of a full fine-tuning run (null for LoRA, which switches adapters off). */
  get referenceModule(): DenoiserModule | null {
    return this.#reference;
  }

  #emit(e: TrainEvent): void {
    if (this.#isMain) this.#opts.onEvent?.(e);
  }

  #needsReference(): boolean {
    return methodNeedsReference(this.config.method) || this.config.referenceMetrics || this.config.validation.every > 0 ||
      this.config.referenceCache !== undefined;
  }

  /** sha256 of the reference's weights: the frozen copy (full), or the base with the adapters left out (LoRA). */
  #referenceFingerprint(): string {
    if (this.#freedReference !== null) return this.#freedReference;
    // the reference never changes, so hash it once (full fine-tuning of a large UNet: seconds)
    if (this.#fingerprint !== null) return this.#fingerprint;
    if (this.config.finetune === "lora") {
      const adapters = new Set(this.#opts.adapters!.stateDict().keys());
      const all = this.#opts.model.stateDict();
      this.#fingerprint = weightsFingerprint(all, new Set([...all.keys()].filter((k) => adapters.has(k) || /(^|\.)lora[._]/.test(k))));
    } else {
      this.#fingerprint = weightsFingerprint(this.#reference!.stateDict());
    }
    return this.#fingerprint;
  }

  /**
   * The reference cache of this run: reused when <outputDir>/reference-cache.safetensors was built
   * for the same identity, else built (a fresh run rebuilds a mismatched one with a warning; a
   * resumed run refuses it, since its checkpoint trained against that cache).
   */
  async #referenceCache(referenceFn: DenoisingModel | undefined, resumedFrom: string | null, step: number): Promise<{ cache: ReferenceCache; built: boolean; seconds: number }> {
    const cfg = this.config;
    const o = this.#opts;
    const K = cfg.referenceCache!.draws;
    const path = join(cfg.outputDir, REFERENCE_CACHE_FILE);
    const identity = referenceCacheIdentity({
      draws: K, seed: cfg.seed, promptDropout: cfg.promptDropout, predictionType: cfg.predictionType,
      noising: noisingFingerprint(o.schedule, o.noising), mixedPrecision: cfg.mixedPrecision,
      reference: this.#referenceFingerprint(), data: o.referenceCacheData ?? "",
    });
    const t0 = performance.now();
    if (existsSync(path)) {
      let problem: string;
      try {
        const cached = ReferenceCache.load(path);
        const diffs = identityDifferences(cached.identity, identity);
        if (diffs.length === 0) return { cache: cached, built: false, seconds: (performance.now() - t0) / 1000 };
        problem = `was built for other settings (${diffs.join("; ")})`;
      } catch (err) {
        problem = `cannot be read (${(err as Error).message})`;
      }
      if (resumedFrom !== null) {
        throw new Error(
          `reference cache ${path} ${problem}, but this run resumes from ${resumedFrom}, which trained against it. ` +
            `Resume with the settings the cache was built for, or delete ${path} to rebuild it (the rest of the run then trains against new draws)`,
        );
      }
      this.#emit({ type: "warning", step, code: "reference-cache", message: `reference cache ${path} ${problem}: rebuilding it for this run` });
    }
    if (referenceFn === undefined) {
      throw new Error(`reference cache ${path}: the reference copy was freed after the cache was built; create a new DpoTrainer to build another`);
    }
    const source = o.referencePairs?.() ?? o.data.everyPair!();
    async function* disposing(src: Iterable<PairBatch> | AsyncIterable<PairBatch>): AsyncGenerator<PairBatch> {
      for await (const b of src) {
        try {
          yield b;
        } finally {
          b.pixels.dispose();
        }
      }
    }
    const cache = await buildReferenceCache({
      path, identity, pairs: disposing(source), reference: referenceFn, encodePrompts: o.encodePrompts, encodeImages: o.encodeImages,
      seed: cfg.seed, draws: K, schedule: o.schedule, noising: o.noising, predictionType: cfg.predictionType,
      promptDropout: cfg.promptDropout, mixedPrecision: cfg.mixedPrecision,
      onProgress: (pairs) => this.#emit({ type: "reference-cache-progress", pairs, draws: K }),
    });
    return { cache, built: true, seconds: (performance.now() - t0) / 1000 };
  }

  #trainableWeights(): Map<string, Tensor> {
    if (this.config.finetune === "lora") return this.#opts.adapters!.stateDict();
    return this.#opts.model.stateDict();
  }

  async run(): Promise<TrainResult> {
    const cfg = this.config;
    const o = this.#opts;
    const model = o.model;
    const pg = o.processGroup;
    const world = pg?.worldSize ?? 1;
    const processes = o.processes ?? world;
    mkdirSync(cfg.outputDir, { recursive: true });
    if (this.#isMain) {
      for (const path of cleanTemporaryCheckpoints(cfg.outputDir)) {
        this.#emit({ type: "warning", step: 0, code: "temporary-removed", message: `removed ${path}, left by an interrupted checkpoint write` });
      }
    }
    // Data parallel: every rank starts from rank 0's weights, frozen ones and buffers included (as
    // DDP syncs the module state), and the LoRA adapters; before the reference is copied, so the
    // reference is the same on all ranks too.
    if (pg !== undefined && world > 1) {
      const adapters = cfg.finetune === "lora" ? [...o.adapters!.stateDict().values()] : [];
      pg.broadcast([...model.stateDict().values(), ...adapters], 0);
    }

    // The reference: copied from the model BEFORE any checkpoint is loaded, so it is the base.
    let referenceFn: DenoisingModel | undefined;
    const policyFn = denoiserOf(model);
    if (this.#needsReference()) {
      if (cfg.finetune === "lora") {
        referenceFn = adaptersOffReference(policyFn, (on) => o.adapters!.setEnabled(on));
      } else {
        // (not again once freed for the reference cache: the model has trained since)
        if (this.#reference === null && this.#freedReference === null) {
          this.#reference = model.deepCopy().requiresGrad(false).eval();
        }
        referenceFn = this.#reference === null ? undefined : denoiserOf(this.#reference);
      }
    }

    const params = model.trainableParameters();
    if (params.length === 0) throw new Error("the model has no trainable parameters (all gradients are off)");
    for (const message of configWarnings(cfg)) this.#emit({ type: "warning", step: 0, code: "config", message });
    const baseLr = effectiveLearningRate(cfg, processes);
    const optimizer: Optimizer =
      cfg.optimizer.kind === "adamw"
        ? new AdamW(params, { lr: baseLr, betas: cfg.optimizer.betas, eps: cfg.optimizer.eps, weightDecay: cfg.optimizer.weightDecay })
        : new Adafactor(params, { lr: baseLr, clipThreshold: cfg.optimizer.clipThreshold, weightDecay: 0 });
    this.#optimizer?.dispose();
    this.#optimizer = optimizer;
    const gen = new Generator(cfg.seed);
    let step = 0;
    let batchIndex = 0;
    let skippedSteps = 0;
    let resumedFrom: string | null = null;

    // ---- resume ----
    if (cfg.resume !== false) {
      const path = cfg.resume === true ? latestCheckpoint(cfg.outputDir) : cfg.resume;
      if (path !== null && !existsSync(path)) {
        throw new Error(`cannot resume: checkpoint ${path} does not exist (resume takes true for the latest in outputDir, or a checkpoint folder)`);
      }
      if (path !== null) {
        const ck = loadCheckpoint(path);
        try {
          const savedWorld = ck.state.worldSize ?? 1;
          if (savedWorld !== world) {
            throw new Error(
              `cannot resume: checkpoint ${path} was written by a run with ${savedWorld} process${savedWorld === 1 ? "" : "es"} and this run has ${world}; ` +
                `resume with the same number (--nproc ${savedWorld}): the data shards and per-rank data positions depend on it`,
            );
          }
          if (ck.state.weights !== cfg.finetune) {
            throw new Error(`checkpoint ${path} holds ${ck.state.weights} weights but this run fine-tunes "${cfg.finetune}"`);
          }
          const target = this.#trainableWeights();
          const missing = [...target.keys()].filter((k) => !ck.weights.has(k));
          if (missing.length > 0) {
            throw new Error(`checkpoint ${path}: model.safetensors lacks ${missing.length} weights of this model (first: ${missing[0]}); is it from another model or LoRA config?`);
          }
          noGrad(() => {
            for (const [name, t] of target) t.copy_(ck.weights.get(name)!);
          });
          optimizer.loadStateDict(ck.optimizer);
          gen.setState(decodeBytes(ck.state.generator));
          const dataState = world > 1 ? ck.state.dataByRank?.[pg!.rank] : ck.state.data;
          if (dataState !== undefined && o.data.restore !== undefined) o.data.restore(dataState);
          step = ck.state.step;
          batchIndex = ck.state.batchIndex;
          skippedSteps = ck.state.skippedSteps;
          resumedFrom = path;
        } finally {
          for (const t of ck.weights.values()) t.dispose();
          for (const t of ck.optimizer.tensors.values()) t.dispose();
        }
      }
    }

    // ---- reference cache: Rw, Rl of K fixed draws per pair, computed once; no reference forward in the steps ----
    let referenceCache: ReferenceCache | null = null;
    if (cfg.referenceCache !== undefined) {
      const r = await this.#referenceCache(referenceFn, resumedFrom, step);
      referenceCache = r.cache;
      let freed: number | null = null;
      // full fine-tuning: the frozen copy is no longer needed (kept when validation grids show the base)
      if (this.#reference !== null && cfg.validation.every === 0) {
        this.#freedReference = this.#referenceFingerprint();
        const before = liveTensorBytes();
        this.#reference.dispose();
        this.#reference = null;
        freed = before - liveTensorBytes();
        referenceFn = undefined;
      }
      this.#emit({
        type: "reference-cache", step, path: referenceCache.path, action: r.built ? "built" : "reused", pairs: referenceCache.pairs,
        draws: referenceCache.draws, seconds: r.seconds, referenceFreedBytes: freed,
      });
    }

    const effectiveBatch = cfg.batchSize * cfg.gradientAccumulation * processes;
    this.#emit({
      type: "start", step, maxSteps: cfg.maxSteps, effectiveBatch, lr: baseLr,
      trainableParameters: params.reduce((n, [, p]) => n + p.size, 0), resumedFrom,
    });

    // with the reference cache the step gets no reference at all: it cannot run one by mistake
    const models: StepModels = {
      policy: policyFn, reference: referenceCache === null ? referenceFn : undefined, encodePrompts: o.encodePrompts, encodeImages: o.encodeImages,
    };
    const overlapSplit = balancedOverlapSplit(cfg.finetune, models.reference !== undefined);
    const cached: Pick<StepOptions, "pairDraws" | "cachedReference"> = referenceCache === null ? {} : {
      pairDraws: fixedPairDraws({ seed: cfg.seed, draws: referenceCache.draws, schedule: o.schedule, noising: o.noising }),
      cachedReference: (keys, draws, tPairs, device) => referenceCache.lookup(keys, draws, tPairs, device),
    };
    if (o.gradientCheckpointing === true) {
      if (model.forwardCheckpointed === undefined) throw new Error("gradientCheckpointing: this model has no forwardCheckpointed (UNet2DConditionModel has)");
      models.policyCheckpointed = (x, t, c) => model.forwardCheckpointed!(x, t, c);
    }
    const schedule = { kind: cfg.lrSchedule, warmupSteps: cfg.warmupSteps, totalSteps: cfg.maxSteps };
    const paramTensors = params.map(([, p]) => p);
    const history: TrainResult["history"] = [];
    let lastCheckpoint: string | null = latestCheckpoint(cfg.outputDir);
    let lastSavedStep = resumedFrom !== null ? step : -1;
    const started = performance.now();
    const startStep = step;
    let stepsThisCall = 0;
    const reducer = pg !== undefined && world > 1 && o.gradientReduce !== "after-backward" ? pg.createReducer(paramTensors, { bucketBytes: o.gradientBucketBytes }) : null;
    // Steps pipelined (one process, overlapped steps, a reference forward): each step prepares the
    // next micro-batch (its draws, encodings and first reference errors) during its last backward.
    // A checkpoint then saves the generator and data position from before that preparation, so a
    // resumed run redraws the same step.
    const pipelineWanted = o.pipelineSteps ?? pipelinesByDefault(cfg.finetune, cfg.batchSize);
    const pipeline = o.overlapBackward !== false && pipelineWanted && world === 1 && models.reference !== undefined && models.policyCheckpointed === undefined
      ? balancedPipelineSplit(cfg.finetune)
      : null;
    let pending: { step: PreparedStep; generator: Uint8Array; data: unknown } | null = null;
    const stepOpts: StepOptions = {
      method: cfg.method, beta: cfg.beta, mapo: cfg.mapo, sftWeight: cfg.sftWeight, schedule: o.schedule, noising: o.noising,
      predictionType: cfg.predictionType, promptDropout: cfg.promptDropout,
      lossScale: 1 / cfg.gradientAccumulation, mixedPrecision: cfg.mixedPrecision,
      latentSampling: cfg.latentSampling, overlapBackward: o.overlapBackward !== false, overlapSplit: pipeline?.first ?? overlapSplit, ...cached,
      ...(world > 1 ? { shard: o.data.shard! } : {}),
    };
    const prefetchOf = (b: PairBatch): number => Math.round(b.prompts.length * pipeline!.prefetched);
    try {
      while (step < cfg.maxSteps && (o.stopAfterSteps === undefined || stepsThisCall < o.stopAfterSteps)) {
        const t0 = performance.now();
        const lr = lrAt(step, baseLr, schedule);
        optimizer.lr = lr;

        // micro-batches
        const results: StepResult[] = [];
        let finite = true;
        for (let k = 0; k < cfg.gradientAccumulation; k++) {
          let input: PairBatch | PreparedStep = pending?.step ?? (await o.data.batch(batchIndex));
          pending = null;
          const pipelined = pipeline !== null && overlapsBackward(stepOpts, cfg.batchSize, isPreparedStep(input) ? input.device : input.pixels.device, models);
          if (pipelined && !isPreparedStep(input)) {
            // the first pipelined step (of a run, or after resume) is prepared as the later ones are, so a resumed run equals an uninterrupted one
            const batch = input;
            try {
              input = withForegroundTeam(() => prepareStep(models, batch, gen, stepOpts, prefetchOf(batch)));
            } finally {
              batch.pixels.dispose();
            }
          }
          batchIndex++;
          // only the last micro-batch's backward all-reduces (the others accumulate locally)
          if (reducer !== null && k === cfg.gradientAccumulation - 1) reducer.arm();
          // pipelined: the next micro-batch is fetched now and prepared during this one's last backward
          const hasNext = k < cfg.gradientAccumulation - 1 ||
            (step + 1 < cfg.maxSteps && (o.stopAfterSteps === undefined || stepsThisCall + 1 < o.stopAfterSteps));
          let nextBatch: PairBatch | undefined;
          let nextData: unknown;
          let nextGenerator: Uint8Array | undefined;
          let ran = false;
          try {
            let prepareNext: StepOptions["prepareNext"];
            if (pipelined && hasNext) {
              nextData = o.data.state?.();
              const b = (nextBatch = await o.data.batch(batchIndex));
              prepareNext = () => {
                nextGenerator = gen.getState();
                return prepareStep(models, b, gen, stepOpts, prefetchOf(b));
              };
            } else if (pipelined) {
              // the last step of this call: its backward runs as every pipelined step's does
              prepareNext = () => undefined;
            }
            ran = true;
            const r = dpoStep(models, input, gen, prepareNext !== undefined ? { ...stepOpts, prepareNext } : stepOpts);
            if (r.next !== undefined) pending = { step: r.next, generator: nextGenerator!, data: nextData };
            results.push(r);
            finite &&= r.finite;
          } finally {
            // dpoStep frees a prepared input it ran
            if (!isPreparedStep(input)) input.pixels.dispose();
            else if (!ran) disposePreparedStep(input);
            nextBatch?.pixels.dispose();
          }
        }
        const mean = (f: (r: StepResult) => number): number => results.reduce((a, r) => a + f(r), 0) / results.length;
        let local = [mean((r) => r.loss), mean((r) => r.implicitAcc), mean((r) => r.policyMse), mean((r) => r.referenceMse), mean((r) => r.margin)];
        if (pg !== undefined && world > 1) {
          // the gradients of the accumulated micro-batches, averaged across ranks (the buckets the
          // hooks launched during backward, then the rest); then the metrics, and whether every
          // rank was finite
          if (reducer !== null) reducer.finish();
          else pg.averageGradients(paramTensors, o.gradientBucketBytes);
          const reduced = pg.allReduceNumbers([...local, finite ? 0 : 1], "sum");
          local = reduced.slice(0, 5).map((v) => v / world);
          finite = reduced[5] === 0;
        }
        const gradNorm = clipGradNorm(paramTensors, cfg.maxGradNorm);
        const badWhat = !finite ? "loss" : !Number.isFinite(gradNorm) ? "gradient norm" : null;
        if (badWhat !== null) {
          optimizer.zeroGrad();
          if (cfg.onNonFinite === "stop" || skippedSteps >= cfg.maxSkippedSteps) {
            throw new NonFiniteError(step + 1, badWhat, lastCheckpoint, cfg);
          }
          skippedSteps++;
          this.#emit({
            type: "warning", step: step + 1, code: "non-finite-skipped",
            message: `non-finite ${badWhat} at step ${step + 1}: update skipped (${skippedSteps} skipped so far)`,
          });
        } else {
          optimizer.step();
          optimizer.zeroGrad();
        }
        step++;
        stepsThisCall++;

        const pairs = results.reduce((a, r) => a + r.pairs, 0);
        const dt = (performance.now() - t0) / 1000;
        const metrics: StepMetrics = {
          loss: local[0]!,
          implicitAcc: local[1]!,
          policyMse: local[2]!,
          referenceMse: local[3]!,
          margin: local[4]!,
          gradNorm,
          lr,
          pairsPerSec: (pairs * processes) / Math.max(dt, 1e-9),
          skippedSteps,
        };
        history.push({ step, metrics });
        const elapsedSec = (performance.now() - started) / 1000;
        if (step % cfg.logEvery === 0 || step === cfg.maxSteps) {
          const perStep = elapsedSec / (step - startStep);
          this.#emit({ type: "step", step, maxSteps: cfg.maxSteps, metrics, elapsedSec, etaSec: perStep * (cfg.maxSteps - step) });
        }

        if (cfg.checkpointEvery > 0 && step % cfg.checkpointEvery === 0) {
          lastCheckpoint = this.#save(step, batchIndex, skippedSteps, gen, optimizer, pending);
          lastSavedStep = step;
          this.#emit({ type: "checkpoint", step, path: lastCheckpoint });
        }
        if (cfg.validation.every > 0 && step % cfg.validation.every === 0 && o.sampleValidation !== undefined && this.#isMain) {
          const path = await this.#validate(step, policyFn, referenceFn);
          this.#emit({ type: "validation", step, path });
        }
      }
    } finally {
      reducer?.dispose();
      if (pending !== null) disposePreparedStep(pending.step);
      pending = null;
    }

    const finished = step >= cfg.maxSteps;
    if (lastSavedStep !== step && (finished || cfg.checkpointEvery > 0)) {
      lastCheckpoint = this.#save(step, batchIndex, skippedSteps, gen, optimizer);
      this.#emit({ type: "checkpoint", step, path: lastCheckpoint });
    }
    let finalPath: string | null = null;
    if (finished) {
      finalPath = join(cfg.outputDir, "final");
      if (this.#isMain) await this.#saveFinal(finalPath);
      this.#emit({ type: "done", step, outputDir: cfg.outputDir, finalPath, skippedSteps, elapsedSec: (performance.now() - started) / 1000 });
    }
    // every rank returns once rank 0's files are written
    if (pg !== undefined && world > 1) pg.barrier();
    return { step, history, finalPath, lastCheckpoint, skippedSteps };
  }

  /** Writes a checkpoint on rank 0 (every rank takes part: the data positions are gathered); returns its folder on every rank. */
  #save(step: number, batchIndex: number, skippedSteps: number, gen: Generator, optimizer: Optimizer, prepared: { generator: Uint8Array; data: unknown } | null = null): string {
    const pg = this.#opts.processGroup;
    const world = pg?.worldSize ?? 1;
    // with a step prepared ahead, the state from before it was drawn and fetched
    const dataState = prepared !== null ? prepared.data : this.#opts.data.state?.();
    const dataByRank = world > 1 && dataState !== undefined ? pg!.allGatherJson(dataState) : undefined;
    if (!this.#isMain) return join(this.config.outputDir, CHECKPOINT_DIR, stepDirName(step));
    const optState = optimizer.stateDict();
    const state: TrainerState = {
      step, batchIndex, generator: encodeBytes(prepared?.generator ?? gen.getState()), optimizer: optState.meta,
      skippedSteps, weights: this.config.finetune, writer: WRITER,
    };
    if (dataState !== undefined) state.data = dataState;
    if (world > 1) {
      state.worldSize = world;
      if (dataByRank !== undefined) state.dataByRank = dataByRank;
    }
    return saveCheckpoint({
      outputDir: this.config.outputDir, state, weights: this.#trainableWeights(), optimizer: optState,
      config: this.config, keep: this.config.keepCheckpoints, afterFile: this.#opts.afterCheckpointFile,
    });
  }

  async #saveFinal(dir: string): Promise<void> {
    const o = this.#opts;
    mkdirSync(dir, { recursive: true });
    // the weights first (a model-folder writer may insist on an empty folder), then the config
    if (o.saveFinal !== undefined) {
      await o.saveFinal(dir, o.model, o.adapters);
    } else {
      const meta = { format: "pt", method: this.config.method, beta: String(this.config.beta) };
      if (this.config.finetune === "lora") {
        const a = o.adapters!;
        writeSafetensorsSync(join(dir, "pytorch_lora_weights.safetensors"), a.exportStateDict?.() ?? a.stateDict(), { ...meta, ...a.exportMetadata?.() });
      } else {
        // a unet/ folder that loads as a diffusers UNet: weights and their config.json
        const config = o.model.diffusersConfig?.();
        mkdirSync(join(dir, "unet"), { recursive: true });
        writeSafetensorsSync(join(dir, "unet", "diffusion_pytorch_model.safetensors"), o.model.stateDict(), meta);
        if (config !== undefined) writeFileSync(join(dir, "unet", "config.json"), `${JSON.stringify(config, null, 2)}\n`);
        else {
          this.#emit({
            type: "warning", step: this.config.maxSteps, code: "config",
            message: `${join(dir, "unet")} holds weights without a config.json (the model has no diffusersConfig()); pass saveFinal, e.g. the pipeline's saveModelFolder, for a folder that loads as a model`,
          });
        }
      }
    }
    writeFileSync(join(dir, "training_config.json"), `${JSON.stringify(this.config, null, 2)}\n`);
  }

  async #validate(step: number, policy: DenoisingModel, base: DenoisingModel | undefined): Promise<string> {
    const cfg = this.config.validation;
    const sample = this.#opts.sampleValidation!;
    const rows: Tensor[][] = [];
    try {
      for (const prompt of cfg.prompts) {
        const row: Tensor[] = [];
        for (const seed of cfg.seeds) {
          if (base !== undefined) row.push(noGrad(() => sample(base, prompt, seed)));
          row.push(noGrad(() => sample(policy, prompt, seed)));
        }
        rows.push(row);
      }
      const path = join(this.config.outputDir, "validation", `step-${String(step).padStart(6, "0")}.png`);
      await writeImageGrid(path, rows);
      return path;
    } finally {
      for (const row of rows) for (const t of row) t.dispose();
    }
  }

  /** Frees the reference copy and optimizer state. */
  dispose(): void {
    this.#reference?.dispose();
    this.#reference = null;
    this.#optimizer?.dispose();
    this.#optimizer = null;
  }
}

/** Whether a run folder holds a checkpoint to resume from. */
export function hasCheckpoint(outputDir: string): boolean {
  return existsSync(outputDir) && latestCheckpoint(outputDir) !== null;
}
