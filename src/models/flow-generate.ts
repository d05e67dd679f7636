// Prompts → images for SD3 and Flux folders (what `diffusion-dpo sample` runs for them): per image,
// the starting latents come from its own seed as diffusers draws them (torch.randn on the CPU
// generator seeded `seed`, shape [1, 16, h, w]; Flux packs them 2×2 afterwards).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Generator, randn, tidy, type Tensor } from "../tensor/index.js";
import type { RgbImage } from "../tensor/pixels.js";
import { disposeSD3Pipeline, generateSD3, loadSD3Pipeline, type SD3Pipeline } from "./sd3/pipeline.js";
import { disposeFluxPipeline, fluxLatentSize, generateFlux, loadFluxPipeline, type FluxPipeline } from "./flux/pipeline.js";
import { packLatents } from "./flux/transformer.js";
import { vaeScaleFactor } from "./vae/autoencoder-kl.js";

export type FlowFamily = "sd3" | "flux";

/** "sd3" / "flux" when `dir`'s model_index.json names StableDiffusion3Pipeline / FluxPipeline, else null. */
export function flowFamilyOf(dir: string): FlowFamily | null {
  const path = join(dir, "model_index.json");
  if (!existsSync(path)) return null;
  try {
    const cls = (JSON.parse(readFileSync(path, "utf8")) as { _class_name?: unknown })._class_name;
    return cls === "StableDiffusion3Pipeline" ? "sd3" : cls === "FluxPipeline" ? "flux" : null;
  } catch {
    return null;
  }
}

export type FlowPipeline = { family: "sd3"; pipe: SD3Pipeline } | { family: "flux"; pipe: FluxPipeline };

export function loadFlowPipeline(dir: string): FlowPipeline {
  const family = flowFamilyOf(dir);
  if (family === "sd3") return { family, pipe: loadSD3Pipeline(dir) };
  if (family === "flux") return { family, pipe: loadFluxPipeline(dir) };
  throw new Error(`${join(dir, "model_index.json")}: not a StableDiffusion3Pipeline or FluxPipeline folder`);
}

export function disposeFlowPipeline(p: FlowPipeline): void {
  if (p.family === "sd3") disposeSD3Pipeline(p.pipe);
  else disposeFluxPipeline(p.pipe);
}

export interface FlowGenerateOptions {
  prompts: string[];
  seeds: number[];
  steps?: number;
  /** SD3: classifier-free guidance (default 7); Flux: the guidance embedding's value (default 3.5). */
  guidance?: number;
  negativePrompt?: string;
  /** Image side in pixels (default: SD3 sample_size × 8, Flux 1024). */
  size?: number;
  maxSequenceLength?: number;
  onEvent?: (e: { type: "step"; image: number; images: number; done: number; total: number }) => void;
}

function toRgb(image: Tensor): RgbImage {
  // image [1, H, W, 3] in [0, 1] (diffusers' "np" output) → 8-bit as diffusers' numpy_to_pil: round(x·255)
  const [, h, w] = image.shape as [number, number, number, number];
  const data = tidy(() => image.mul(255).round().to("u8").data()) as Uint8Array;
  return { width: w, height: h, data: new Uint8Array(data) };
}

/** One image per (prompt, seed). */
export function generateFlowImages(p: FlowPipeline, o: FlowGenerateOptions): RgbImage[] {
  if (o.prompts.length !== o.seeds.length) throw new Error(`generateFlowImages: ${o.prompts.length} prompts but ${o.seeds.length} seeds`);
  const steps = o.steps ?? 28;
  const out: RgbImage[] = [];
  o.prompts.forEach((prompt, i) => {
    const onStep = (s: number) => o.onEvent?.({ type: "step", image: i, images: o.prompts.length, done: s + 1, total: steps });
    out.push(tidy(() => {
      if (p.family === "sd3") {
        const f = vaeScaleFactor(p.pipe.vae.config);
        const size = o.size ?? p.pipe.transformer.config.sampleSize * f;
        const latents = randn([1, p.pipe.transformer.config.inChannels, Math.floor(size / f), Math.floor(size / f)], new Generator(o.seeds[i]!));
        const r = generateSD3(p.pipe, {
          prompt, negativePrompt: o.negativePrompt, height: size, width: size, steps, guidanceScale: o.guidance, maxSequenceLength: o.maxSequenceLength, latents, onStep,
        });
        return toRgb(r.image);
      }
      const size = o.size ?? 1024;
      const [h, w] = fluxLatentSize(p.pipe, size, size);
      const channels = p.pipe.transformer.config.inChannels / 4;
      const latents = packLatents(randn([1, channels, h, w], new Generator(o.seeds[i]!)));
      const r = generateFlux(p.pipe, { prompt, height: size, width: size, steps, guidanceScale: o.guidance, maxSequenceLength: o.maxSequenceLength, latents, onStep });
      return toRgb(r.image);
    }));
  });
  return out;
}
