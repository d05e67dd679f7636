// One Diffusion-DPO run on an SD1.x / SDXL model, as `diffusion-dpo train` and the demo's train
// stage both set it up: frozen text encoders and VAE, the UNet as the policy (LoRA adapters
// injected with the run's seed, or every weight for full fine-tuning), the batch source (the
// streaming loader over preference data, or a training cache), prompt / image encoders, the
// validation sampler and the final save. The caller loads the model and opens the data (and
// keeps them: dispose() frees only what the run made).
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
import { LoaderBatchSource } from "./data.js";
import type { PairMicroConditioning } from "./dpo-step.js";
import type { TrainEvent } from "./events.js";
import { DpoTrainer, loraAdapters, type TrainResult } from "./trainer.js";
import { validationSampler } from "./validation.js";

/** LoRA injection refused the targets (the CLI names its --lora-targets flag). */
export class LoraTargetsError extends Error {
  override readonly name = "LoraTargetsError";
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
    encodeImages: vae && cache === null ? (px, noise) => vae.encodeLatents(px, noise) : undefined,
    schedule,
    data: source,
    processGroup: o.processGroup,
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
