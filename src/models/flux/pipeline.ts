// FluxPipeline (diffusers v0.30) from a folder: CLIP-L (pooled output only), T5 (the sequence),
// the Flux transformer on 2×2-packed latents, the 16-channel VAE, the dynamic-shift scheduler.
//
//   encode_prompt: pooled = CLIPTextModel pooler_output; prompt_embeds = T5 last_hidden_state
//   (max_sequence_length tokens, no mask); text_ids = zeros [N, L, 3]
//   generate: packed latents [1, (h/2)(w/2), 64] with h = 2·(H // 16) (v0.30's vae_scale_factor is
//   2^len(block_out_channels) = 16 for a 4-level VAE); image ids (0, row, col);
//   μ = calculate_shift(tokens); σ = linspace(1, 1/n, n) time-shifted by e^μ; no CFG (FLUX.1-dev's
//   guidance is an embedding input, ignored by models without guidance_embeds);
//   the transformer gets t / 1000; decode(unpack(latents) / scaling + shift).
import { join, resolve } from "node:path";
import type { ClipTextModel } from "../clip/text-model.js";
import type { ClipTokenizer } from "../clip/tokenizer.js";
import type { AutoencoderKL } from "../vae/autoencoder-kl.js";
import type { T5EncoderModel } from "../t5/encoder.js";
import type { T5Tokenizer } from "../t5/tokenizer.js";
import { readJsonObject } from "../../util/config-json.js";
import { full, noGrad, tensor, tidy, zeros, type Tensor } from "../../tensor/index.js";
import { calculateShift, flowSetTimesteps, linspace64, type FlowMatchSchedulerConfig } from "../../diffusion/flow/scheduler.js";
import { flowSample } from "../../diffusion/flow/sample.js";
import { FluxTransformer2DModel, fluxTransformerConfigFromJson, latentImageIds, unpackLatents } from "./transformer.js";
import {
  loadClipTextEncoder, loadClipTokenizer, loadDiffusersModule, loadFlowScheduler, loadT5Encoder, loadT5Tokenizer, loadVae, readModelIndex,
} from "../sd3/components.js";
import { t5PromptEmbeds } from "../sd3/pipeline.js";

export interface FluxPipeline {
  textEncoder: ClipTextModel;
  textEncoder2: T5EncoderModel;
  tokenizer: ClipTokenizer;
  tokenizer2: T5Tokenizer;
  transformer: FluxTransformer2DModel;
  vae: AutoencoderKL;
  scheduler: FlowMatchSchedulerConfig;
}

/** Loads a FluxPipeline folder. */
export function loadFluxPipeline(dir: string, opts: { variant?: string } = {}): FluxPipeline {
  const root = resolve(dir);
  readModelIndex(root, "FluxPipeline");
  const cfgPath = join(root, "transformer", "config.json");
  const config = fluxTransformerConfigFromJson(readJsonObject(cfgPath, "transformer"), cfgPath);
  const scheduler = loadFlowScheduler(join(root, "scheduler"));
  const tokenizer = loadClipTokenizer(join(root, "tokenizer"));
  const tokenizer2 = loadT5Tokenizer(join(root, "tokenizer_2"));
  const textEncoder = loadClipTextEncoder(join(root, "text_encoder"), opts.variant);
  const textEncoder2 = loadT5Encoder(join(root, "text_encoder_2"), opts.variant);
  if (textEncoder.config.hiddenSize !== config.pooledProjectionDim) {
    throw new Error(`${cfgPath}: pooled_projection_dim ${config.pooledProjectionDim} ≠ the CLIP text encoder's hidden_size ${textEncoder.config.hiddenSize}`);
  }
  if (textEncoder2.config.dModel !== config.jointAttentionDim) {
    throw new Error(`${cfgPath}: joint_attention_dim ${config.jointAttentionDim} ≠ the T5 width d_model ${textEncoder2.config.dModel}`);
  }
  const transformer = loadDiffusersModule(join(root, "transformer"), () => new FluxTransformer2DModel(config), opts.variant);
  const vae = loadVae(join(root, "vae"), opts.variant);
  return { textEncoder, textEncoder2, tokenizer, tokenizer2, transformer, vae, scheduler };
}

export function disposeFluxPipeline(p: FluxPipeline): void {
  for (const m of [p.textEncoder, p.textEncoder2, p.transformer, p.vae]) m.dispose();
}

/** FluxPipeline's latent grid for an image: 2·(H // 16) × 2·(W // 16) (v0.30). */
export function fluxLatentSize(p: FluxPipeline, height: number, width: number): [number, number] {
  const f = 2 ** p.vae.config.blockOutChannels.length;
  return [2 * Math.floor(height / f), 2 * Math.floor(width / f)];
}

export interface FluxPromptEmbeds {
  promptEmbeds: Tensor;
  pooledPromptEmbeds: Tensor;
  textIds: Tensor;
}

/** FluxPipeline.encode_prompt (prompt_2 = prompt). */
export function encodeFluxPrompt(p: FluxPipeline, prompts: string[], maxSequenceLength = 512): FluxPromptEmbeds {
  return noGrad(() => tidy(() => {
    const enc = p.tokenizer.encodeBatch(prompts, { maxLength: 77 });
    const ids = tensor(BigInt64Array.from(enc.ids.flat().map(BigInt)), [prompts.length, enc.ids[0]!.length]);
    const pooled = p.textEncoder.forward(ids).pooled;
    const states = t5PromptEmbeds(p.textEncoder2, p.tokenizer2, prompts, maxSequenceLength);
    return { promptEmbeds: states, pooledPromptEmbeds: pooled, textIds: zeros([prompts.length, states.shape[1]!, 3]) };
  }));
}

export interface FluxGenerateOptions {
  prompt: string;
  height?: number;
  width?: number;
  steps?: number;
  /** The guidance embedding's value (models with guidance_embeds; FLUX.1-dev default 3.5). */
  guidanceScale?: number;
  maxSequenceLength?: number;
  /** PACKED initial latents [1, (h/2)(w/2), 4·C]. */
  latents: Tensor;
  onStep?: (step: number, latents: Tensor) => void;
}

export interface FluxGenerateResult {
  /** Packed final latents. */
  latents: Tensor;
  /** [1, C, h, w]. */
  unpacked: Tensor;
  decoded: Tensor;
  image: Tensor;
}

/** FluxPipeline.__call__ from a prompt string. */
export function generateFlux(p: FluxPipeline, o: FluxGenerateOptions): FluxGenerateResult {
  const steps = o.steps ?? 28;
  const height = o.height ?? 1024, width = o.width ?? 1024;
  const [h, w] = fluxLatentSize(p, height, width);
  const want = [1, (h / 2) * (w / 2), p.transformer.config.inChannels];
  if (o.latents.shape.join(",") !== want.join(",")) throw new Error(`generateFlux: packed latents must be [${want.join(", ")}] for ${height}×${width}, got [${o.latents.shape.join(", ")}]`);
  return noGrad(() => {
    const enc = encodeFluxPrompt(p, [o.prompt], o.maxSequenceLength ?? 512);
    const imgIds = latentImageIds(1, h, w);
    const mu = calculateShift(want[1]!, p.scheduler);
    const schedule = flowSetTimesteps(p.scheduler, steps, { mu, sigmas: linspace64(1, 1 / steps, steps) });
    const guidance = p.transformer.config.guidanceEmbeds ? full([1], o.guidanceScale ?? 3.5) : null;
    const latents = flowSample({
      latents: o.latents, schedule, onStep: o.onStep,
      velocity: (x, t) => tidy(() => p.transformer.forward({
        hiddenStates: x, encoderHiddenStates: enc.promptEmbeds, pooledProjections: enc.pooledPromptEmbeds,
        timestep: full([x.shape[0]!], t).div(1000), guidance, imgIds, txtIds: enc.textIds,
      })),
    });
    const unpacked = unpackLatents(latents, h, w);
    const decoded = p.vae.decodeLatents(unpacked);
    const image = decoded.div(2).add(0.5).clamp(0, 1).permute([0, 2, 3, 1]).contiguous();
    return { latents, unpacked, decoded, image };
  });
}
