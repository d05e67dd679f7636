// Validation while training: fixed prompts and seeds, the base model and the current model side by
// side, written as one PNG grid (rows = prompts, columns = for each seed: base, current).
import { mkdirSync, renameSync } from "node:fs";
import { dirname } from "node:path";
import sharp from "sharp";
import { full, tidy, type Tensor } from "../tensor/index.js";
import { tensorToPixels } from "../tensor/pixels.js";
import { classifierFreeGuidance, sample, seededInputs, type NoiseSchedule, type SamplerName } from "../diffusion/index.js";
import type { DenoisingModel } from "./dpo-step.js";

/** [3, H, W] in [−1, 1] → H×W×3 bytes. */
export function imageBytes(img: Tensor): { width: number; height: number; data: Uint8Array } {
  if (img.ndim !== 3 || img.shape[0] !== 3) throw new Error(`validation image must be [3, H, W], got [${img.shape.join(", ")}]`);
  const [, h, w] = img.shape as [number, number, number];
  const data = tidy(() => tensorToPixels(img.float().unsqueeze(0)));
  return { width: w, height: h, data };
}

/** Writes a grid of images (rows of [3, H, W] tensors, all one size) as a PNG, atomically. */
export async function writeImageGrid(path: string, rows: Tensor[][], pad = 2): Promise<void> {
  const first = rows[0]?.[0];
  if (first === undefined) throw new Error("writeImageGrid: no images");
  const [, h, w] = first.shape as [number, number, number];
  const cols = Math.max(...rows.map((r) => r.length));
  const W = cols * w + (cols + 1) * pad;
  const H = rows.length * h + (rows.length + 1) * pad;
  const canvas = new Uint8Array(W * H * 3).fill(255);
  rows.forEach((row, r) => {
    row.forEach((img, c) => {
      const px = imageBytes(img);
      if (px.width !== w || px.height !== h) throw new Error(`writeImageGrid: image [${r}][${c}] is ${px.width}×${px.height}, expected ${w}×${h}`);
      const x0 = pad + c * (w + pad);
      const y0 = pad + r * (h + pad);
      for (let y = 0; y < h; y++) canvas.set(px.data.subarray(y * w * 3, (y + 1) * w * 3), ((y0 + y) * W + x0) * 3);
    });
  });
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  await sharp(canvas, { raw: { width: W, height: H, channels: 3 } }).png().toFile(tmp);
  renameSync(tmp, path);
}

export interface ValidationSamplerOptions {
  /** Frozen text encoder: prompts → conditioning [N, L, D]. */
  encodePrompts: (prompts: string[]) => Tensor;
  /**
   * The guidance's unconditional branch for one image (default: the empty prompt's encoding;
   * SDXL pipelines use zero embeddings: src/models/pipeline's unconditionalConditioning).
   */
  unconditional?: () => Tensor;
  schedule: NoiseSchedule;
  /** [C, h, w] of the denoiser's input (latents for a model with a VAE). */
  shape: [number, number, number];
  steps: number;
  /** Classifier-free guidance scale (≤ 1: off). */
  guidanceScale: number;
  /** Default "ddim" (deterministic: base and current model differ only by their weights). */
  sampler?: SamplerName;
  /** Latents → pixels [N, 3, H, W] in [−1, 1] (the VAE decoder); identity when absent. */
  decode?: (x: Tensor) => Tensor;
  device?: string;
}

/**
 * The trainer's `sampleValidation` for a text-to-image model: the seed's starting noise, the
 * sampler with classifier-free guidance against the empty prompt, decoded to [3, H, W] in [−1, 1].
 */
export function validationSampler(o: ValidationSamplerOptions): (denoiser: DenoisingModel, prompt: string, seed: number) => Tensor {
  return (denoiser, prompt, seed) =>
    tidy(() => {
      const cond = o.encodePrompts([prompt]);
      const uncond = o.unconditional ? o.unconditional() : o.encodePrompts([""]);
      const model = (x: Tensor, t: number, c: Tensor): Tensor => denoiser(x, full([x.shape[0]!], t, { dtype: "i64", device: x.device }), c);
      const denoise = classifierFreeGuidance(model, cond, uncond, o.guidanceScale);
      const { gen, noise } = seededInputs([seed], o.shape, { device: o.device ?? "cpu" });
      const x0 = sample({ sampler: o.sampler ?? "ddim", model: denoise, schedule: o.schedule, steps: o.steps, noise, gen });
      const img = o.decode ? o.decode(x0) : x0;
      const [, c, h, w] = img.shape as [number, number, number, number];
      return img.float().clamp(-1, 1).reshape([c, h, w]);
    });
}
