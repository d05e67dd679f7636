// Prompts → images: the text-to-image (and image-to-image) pipeline of StableDiffusionPipeline,
// for pixel-space models (the shipped emoji model) and latent models with a VAE (diffusers
// Stable Diffusion folders).
//
//   cond = text(prompt), uncond = text(negativePrompt ?? "")
//     (SDXL: encode_prompt's states with the pooled embedding and the time ids of `micro`; no
//     negative prompt + force_zeros_for_empty_prompt → zeros, as StableDiffusionXLPipeline)
//   x_T = seed's noise (src/diffusion/seeds.ts: a sample depends on its own seed only)
//   x_0 = sampler(ε̂ = ε(x,t,uncond) + g·(ε(x,t,cond) − ε(x,t,uncond)))     (classifier-free guidance)
//   image = clamp((VAE-decode(x_0) or x_0 + 1)/2, 0, 1) · 255, rounded
//
// Image-to-image (SDEdit) starts from the input noised to the first kept step (strength ∈ [0, 1]).
import {
  NoiseSchedule, classifierFreeGuidance, getSampler, sample, samplerForScheduler, seededInputs, type SamplerName,
} from "../diffusion/index.js";
import { encodePrompts, unconditionalConditioning, type TextToImageModel } from "../models/pipeline.js";
import { defaultMicroConditioning, type MicroConditioning } from "../models/sdxl/conditioning.js";
import { noGrad, tensor, tidy, type Tensor } from "../tensor/index.js";

import { imagesToTensor, tensorToImages, type RgbImage } from "../tensor/pixels.js";

export { imagesToTensor, tensorToImages, type RgbImage };

export interface GenerateOptions {
  model: TextToImageModel;
  prompts: string[];
  /** One per prompt (default 0, 1, 2, …). */
  seeds?: number[];
  sampler?: SamplerName;
  steps?: number;
  /** Classifier-free guidance scale; ≤ 1 turns guidance off. Default 3. */
  guidance?: number;
  negativePrompt?: string;
  /** DDIM η (only DDIM reads it). */
  eta?: number;
  /** Image-to-image inputs: one image for all prompts, or one per prompt (resized to the model's size by the caller). */
  initImages?: RgbImage[];
  /** Fraction of the chain to run from the noised input (default 0.6, the paper's editing strength). */
  strength?: number;
  /** Output side length (pixels); default the UNet's sample_size × the VAE factor. */
  size?: number;
  /** Prompts per forward pass (default 16). */
  batchSize?: number;
  /**
   * SDXL micro-conditioning (diffusers' original_size, crops_coords_top_left, target_size);
   * default original = target = the output size, crop (0, 0).
   */
  micro?: Partial<MicroConditioning>;
  /**
   * Unit-variance starting noise [prompts, C, h, w] instead of the seeds' (diffusers' `latents=`;
   * the sampler scales it by its init_noise_sigma). Per-step noise still comes from the seeds.
   */
  initialNoise?: Tensor;
  onEvent?: (e: GenerateEvent) => void;
}

export type GenerateEvent =
  | { type: "step"; batch: number; batches: number; done: number; total: number }
  | { type: "image"; index: number; prompt: string; seed: number };

function vaeFactor(model: TextToImageModel): number {
  return model.vae ? 2 ** (model.vae.config.blockOutChannels.length - 1) : 1;
}

/** The image side length a model generates by default. */
export function defaultImageSize(model: TextToImageModel): number {
  const s = model.unet.config.sampleSize;
  const side = s === null ? 32 : Array.isArray(s) ? s[0] : s;
  return side * vaeFactor(model);
}

/** Generates one image per prompt; see the file comment for the pipeline. */
export function generate(opts: GenerateOptions): RgbImage[] {
  const { model, prompts } = opts;
  if (prompts.length === 0) throw new Error("generate: needs at least one prompt");
  const seeds = opts.seeds ?? prompts.map((_, i) => i);
  if (seeds.length !== prompts.length) throw new Error(`generate: ${seeds.length} seeds for ${prompts.length} prompts; give one seed per prompt`);
  // default: what the folder's scheduler class runs in diffusers (EulerDiscreteScheduler → euler, …)
  const samplerName = opts.sampler ?? samplerForScheduler(model.schedulerClass);
  const sampler = getSampler(samplerName);
  const steps = opts.steps ?? 50;
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`generate: steps must be a positive integer, got ${steps}`);
  const guidance = opts.guidance ?? 3;
  const strength = opts.strength ?? 0.6;
  if (!(strength >= 0 && strength <= 1)) throw new Error(`generate: strength must be in [0, 1], got ${strength}`);
  const inits = opts.initImages;
  if (inits && inits.length !== 1 && inits.length !== prompts.length) {
    throw new Error(`generate: ${inits.length} init images for ${prompts.length} prompts; give one, or one per prompt`);
  }
  const factor = vaeFactor(model);
  const size = opts.size ?? (inits ? inits[0]!.width : defaultImageSize(model));
  if (size % factor !== 0) throw new Error(`generate: size ${size} must be a multiple of the VAE factor ${factor}`);
  const latent = size / factor;
  const channels = model.unet.config.inChannels;
  const schedule = new NoiseSchedule(model.scheduler);
  const batchSize = Math.max(1, opts.batchSize ?? 16);
  const batches = Math.ceil(prompts.length / batchSize);
  const out: RgbImage[] = [];
  model.unet.eval();
  model.textEncoder.eval();
  model.textEncoder2?.eval();
  const micro: MicroConditioning = { ...defaultMicroConditioning(size, size), ...opts.micro };
  if (opts.initialNoise !== undefined) {
    const want = [prompts.length, channels, latent, latent];
    if (opts.initialNoise.shape.join(",") !== want.join(",")) {
      throw new Error(`generate: initialNoise must be [${want.join(", ")}], got [${opts.initialNoise.shape.join(", ")}]`);
    }
  }
  noGrad(() => {
    const uncond = opts.negativePrompt === undefined
      ? unconditionalConditioning(model, 1, { micro })
      : encodePrompts(model, [opts.negativePrompt], { micro });
    try {
      for (let b = 0; b < batches; b++) {
        const lo = b * batchSize;
        const ps = prompts.slice(lo, lo + batchSize);
        const ss = seeds.slice(lo, lo + batchSize);
        const images = tidy(() => {
          const cond = encodePrompts(model, ps, { micro });
          const denoise = classifierFreeGuidance((x, t, c) => model.unet.forward(x, t, c), cond, uncond, guidance);
          const seeded = seededInputs(ss, [channels, latent, latent]);
          const { gen } = seeded;
          const noise = opts.initialNoise === undefined ? seeded.noise : opts.initialNoise.slice(0, lo, lo + ps.length);
          let init: { x0: Tensor; strength: number } | undefined;
          if (inits) {
            const imgs = inits.length === 1 ? ps.map(() => inits[0]!) : inits.slice(lo, lo + ps.length);
            if (imgs[0]!.width !== size || imgs[0]!.height !== size) throw new Error(`generate: init images must be ${size}×${size}; resize them first`);
            const px = imagesToTensor(imgs);
            init = { x0: model.vae ? model.vae.encodeLatents(px) : px, strength };
          }
          try {
            const x0 = sample({
              sampler, model: denoise, schedule, steps, noise, gen, eta: opts.eta, init,
              onStep: (e) => opts.onEvent?.({ type: "step", batch: b, batches, done: e.done, total: e.total }),
            });
            return tensorToImages(model.vae ? model.vae.decodeLatents(x0) : x0);
          } finally {
            for (const g of gen) g.dispose(); // one native generator per image: free them with the batch
          }
        });
        images.forEach((im, j) => {
          out.push(im);
          opts.onEvent?.({ type: "image", index: lo + j, prompt: ps[j]!, seed: ss[j]! });
        });
      }
    } finally {
      uncond.dispose();
    }
  });
  return out;
}
