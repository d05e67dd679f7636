// One Diffusion-DPO run on an SD1.x / SDXL model, as `diffusion-dpo train` and the demo's train
// stage both set it up: frozen text encoders and VAE, the UNet as the policy (LoRA adapters
// injected with the run's seed, or every weight for full fine-tuning), the batch source (the
// streaming loader over preference data, or a training cache), prompt / image encoders, the
// validation sampler and the final save. The caller loads the model and opens the data (and
// keeps them: dispose() frees only what the run made).
import { resolve } from "node:path";
import type { TrainConfig } from "../config/train.js";
import type { PreferenceData } from "../data/open.js";
import { NoiseSchedule } from "../diffusion/index.js";
import type { ProcessGroup } from "../distributed/process-group.js";
import { saveLoraFinal } from "../models/convert/train-output.js";
import { encodePrompts, saveModelFolder, unconditionalConditioning, type TextToImageModel } from "../models/pipeline.js";
import type { UNet2DConditionModel } from "../models/unet/unet.js";
import { setInitSeed } from "../nn/init.js";
import { injectLora } from "../nn/lora.js";
import { defaultImageSize } from "../sample/generate.js";
import { CachedPairSource, type TrainingCache } from "./cache.js";
import { LoaderBatchSource, loaderPairBatch } from "./data.js";
import type { PairBatch, PairMicroConditioning } from "./dpo-step.js";
import { weightsFingerprint } from "./reference-cache.js";
import type { Tensor } from "../tensor/index.js";
import type { TrainEvent } from "./events.js";
import { DpoTrainer, loraAdapters, type TrainResult } from "./trainer.js";
import { validationSampler } from "./validation.js";

/** LoRA injection refused the targets (the CLI names its --lora-targets flag). */
export class LoraTargetsError extends Error {
  override readonly name = "LoraTargetsError";
}

/**
 * Why this run cannot use config.referenceCache, or null: the cached errors belong to one fixed
 * input per pair, so the data must not be augmented at random nor the latents sampled, and the
 * cache is built in one process. The message names the CLI flags and config keys to change.
 */
export function referenceCacheProblem(
  cfg: TrainConfig, o: { trainingCache: boolean; hasVae: boolean; processes: number },
): string | null {
  if (cfg.referenceCache === undefined) return null;
  const why = "the cached reference errors belong to one fixed input per pair";
  if (o.processes > 1) return "--reference-cache trains in one process for now: leave --nproc out (or drop --reference-cache)";
  if (o.trainingCache) return null; // latents are the posterior mean, augmentation was fixed when the cache was written
  if (cfg.data.flip) return `--reference-cache: data.flip is on; ${why}: pass --no-flip (config: data.flip false)`;
  if (cfg.data.crop === "random") return `--reference-cache: data.crop is "random"; ${why}: use data.crop "center"`;
  if (o.hasVae && cfg.latentSampling === "sample") return `--reference-cache: latents are sampled from the VAE posterior each step; ${why}: pass --latents mean (or train from a \`diffusion-dpo cache\` folder)`;
  return null;
}

export interface TrainingRunOptions {
  /** A loaded SD1.x / SDXL model (loadModelFolder) on `device`; its UNet is trained in place. */
  model: TextToImageModel;
  /** The resolved config; its predictionType must be the model scheduler's (epsilon or v_prediction). */
  config: TrainConfig;
  /** Preference data to stream, or a training cache (latents and prompt encodings: no VAE or text encoder runs). */
  data: { pairs: PreferenceData } | { cache: TrainingCache };
  device?: string;
  processGroup?: ProcessGroup;
  gradientCheckpointing?: boolean;
  /** DpoTrainerOptions.overlapBackward (default on). */
  overlapBackward?: boolean;
  /** Runs on the UNet after LoRA injection, before the trainer snapshots anything (the CLI's --init-from). */
  prepareUNet?: (unet: UNet2DConditionModel) => void | Promise<void>;
  onEvent?: (e: TrainEvent) => void;
}

export interface TrainingRun {
  trainer: DpoTrainer;
  /** The training image side in pixels. */
  resolution: number;
  run(): Promise<TrainResult>;
  /** Frees the trainer and closes the batch source (not the model or the data). */
  dispose(): Promise<void>;
}

export async function buildTrainingRun(o: TrainingRunOptions): Promise<TrainingRun> {
  const { model, config: cfg } = o;
  const device = o.device ?? "cpu";
  const rank = o.processGroup?.rank ?? 0;
  const world = o.processGroup?.worldSize ?? 1;
  const schedule = new NoiseSchedule(model.scheduler);
  const cache = "cache" in o.data ? o.data.cache : null;
  const resolution = cache?.manifest.resolution ?? cfg.data.resolution ?? defaultImageSize(model);

  // frozen text encoders (and VAE); the UNet is the policy
  model.textEncoder.requiresGrad(false).eval();
  model.textEncoder2?.requiresGrad(false).eval();
  model.vae?.requiresGrad(false).eval();
  const unet = model.unet;
  unet.train();
  let adapters;
  if (cfg.finetune === "lora") {
    try {
      setInitSeed(cfg.seed); // the adapters' initial A matrices depend on the run's seed only
      injectLora(unet, { rank: cfg.lora.rank, alpha: cfg.lora.alpha, targets: cfg.lora.targets });
    } catch (err) {
      throw new LoraTargetsError((err as Error).message);
    }
    adapters = loraAdapters(unet);
  }
  await o.prepareUNet?.(unet);

  const problem = referenceCacheProblem(cfg, { trainingCache: cache !== null, hasVae: Boolean(model.vae), processes: world });
  if (problem !== null) throw new Error(problem);
  // the reference cache's one pass over every pair: the training cache in index order, or the
  // data read once in file order (no shuffle, the last partial batch kept, the run's augmentation)
  let referencePairs: (() => AsyncIterable<PairBatch>) | undefined;
  let referenceCacheData: string | undefined;
  if (cfg.referenceCache !== undefined) {
    // the text encoders (and VAE) shape the reference's inputs: their weights are part of the data's identity
    const encoders = new Map<string, Tensor>();
    for (const [name, m] of [["text_encoder", model.textEncoder], ["text_encoder_2", model.textEncoder2], ["vae", cache === null ? model.vae : null]] as const) {
      if (m) for (const [k, t] of m.stateDict()) encoders.set(`${name}.${k}`, t);
    }
    referenceCacheData = JSON.stringify(cache !== null
      ? { trainingCache: resolve(cache.dir), pairs: cache.manifest.pairs, resolution: cache.manifest.resolution, encoders: weightsFingerprint(encoders) }
      : { data: cfg.data.path === undefined ? null : resolve(cfg.data.path), format: cfg.data.format ?? null, dropTies: cfg.data.dropTies, skipBad: cfg.data.skipBad, resolution, crop: cfg.data.crop, encoders: weightsFingerprint(encoders) });
    if (!("cache" in o.data)) {
      const pairs = o.data.pairs;
      referencePairs = async function* () {
        const loader = pairs.loader({
          batchSize: cfg.batchSize, augment: { resolution, crop: cfg.data.crop, flip: cfg.data.flip }, seed: cfg.seed, workers: cfg.data.workers,
          shuffle: false, dropLast: false,
        });
        for await (const b of loader.batches(1)) yield loaderPairBatch(b, device);
      };
    }
  }

  let live: LoaderBatchSource<unknown> | null = null;
  const source = "cache" in o.data
    ? new CachedPairSource(o.data.cache, cfg.batchSize, cfg.seed, device)
    : (live = new LoaderBatchSource(o.data.pairs.loader({
        batchSize: cfg.batchSize, augment: { resolution, crop: cfg.data.crop, flip: cfg.data.flip },
        seed: cfg.seed, workers: cfg.data.workers, rank, worldSize: world,
      }), cfg.batchSize, device));

  const vae = model.vae;
  // SDXL: time ids from each pair's augmentation (original size, crop), else the training size
  const encode = (prompts: string[], micro?: PairMicroConditioning[]) => encodePrompts(model, prompts, { micro, size: resolution });
  // with a cache the step reads the cached encodings (validation prompts still use the encoders)
  const encodeForStep = cache === null ? encode : (prompts: string[], micro?: PairMicroConditioning[]) => cache.encodePrompts(prompts, micro, device);
  const factor = vae ? 2 ** (vae.config.blockOutChannels.length - 1) : 1;
  const latent = resolution / factor;
  let trainer: DpoTrainer;
  try {
    trainer = new DpoTrainer({
    config: cfg,
    model: unet,
    adapters,
    encodePrompts: encodeForStep,
    gradientCheckpointing: o.gradientCheckpointing === true,
    overlapBackward: o.overlapBackward !== false,
    encodeImages: vae && cache === null ? (px, noise) => vae.encodeLatents(px, noise) : undefined,
    schedule,
    data: source,
    processGroup: o.processGroup,
    referencePairs,
    referenceCacheData,
    sampleValidation: validationSampler({
      encodePrompts: encode, unconditional: () => unconditionalConditioning(model, 1, { size: resolution }),
      schedule, shape: [unet.config.inChannels, latent, latent], steps: cfg.validation.steps,
      guidanceScale: cfg.validation.guidanceScale, decode: vae ? (x) => vae.decodeLatents(x) : undefined, device,
    }),
    saveFinal: cfg.finetune === "full"
      ? (dir) => saveModelFolder(dir, model)
      : cfg.lora.format !== "diffusers" ? (dir) => { saveLoraFinal(dir, unet, cfg); } : undefined,
    onEvent: o.onEvent,
    });
  } catch (err) {
    await live?.close();
    throw err;
  }
  return {
    trainer,
    resolution,
    run: () => trainer.run(),
    dispose: async () => {
      trainer.dispose();
      await live?.close();
    },
  };
}
