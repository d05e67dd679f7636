// StableDiffusion3Pipeline (diffusers v0.30) from a folder: three text encoders, the MMDiT, the
// 16-channel VAE and the FlowMatch scheduler.
//
//   encode_prompt: CLIP-L and CLIP-G penultimate hidden states (hidden_states[-2], no final LN)
//   concatenated on the feature axis, zero-padded to the T5 width, then the T5 states appended on
//   the sequence axis ([N, 77 + max_sequence_length, D_T5]); pooled = concat of both CLIP text
//   projections. The negative prompt defaults to "" (SD3 does not zero it).
//   generate: latents [1, 16, H/8, W/8]; per step a [negative, prompt] batch when guidance > 1,
//   v = u + g·(c − u), x += (σ_{i+1} − σ_i)·v; decode(latents / scaling + shift).
import { join, resolve } from "node:path";
import type { ClipTextModel } from "../clip/text-model.js";
import type { ClipTokenizer } from "../clip/tokenizer.js";
import type { AutoencoderKL } from "../vae/autoencoder-kl.js";
import type { T5EncoderModel } from "../t5/encoder.js";
import type { T5Tokenizer } from "../t5/tokenizer.js";
import { readJsonObject } from "../../util/config-json.js";
import { cat, full, noGrad, tensor, tidy, zeros, type Tensor } from "../../tensor/index.js";
import { flowSetTimesteps, type FlowMatchSchedulerConfig } from "../../diffusion/flow/scheduler.js";
import { flowSample } from "../../diffusion/flow/sample.js";
import { vaeScaleFactor } from "../vae/autoencoder-kl.js";
import { SD3Transformer2DModel, sd3TransformerConfigFromJson } from "./transformer.js";
import {
  loadClipTextEncoder, loadClipTokenizer, loadDiffusersModule, loadFlowScheduler, loadT5Encoder, loadT5Tokenizer, loadVae, readModelIndex,
} from "./components.js";

export interface SD3Pipeline {
  textEncoder: ClipTextModel;
  textEncoder2: ClipTextModel;
  /** null: the pipeline was saved without T5 (diffusers then feeds zeros for the T5 part). */
  textEncoder3: T5EncoderModel | null;
  tokenizer: ClipTokenizer;
  tokenizer2: ClipTokenizer;
  tokenizer3: T5Tokenizer | null;
  transformer: SD3Transformer2DModel;
  vae: AutoencoderKL;
  scheduler: FlowMatchSchedulerConfig;
}

/** Loads a StableDiffusion3Pipeline folder (model_index.json with the nine components). */
export function loadSD3Pipeline(dir: string, opts: { variant?: string } = {}): SD3Pipeline {
  const root = resolve(dir);
  const index = readModelIndex(root, "StableDiffusion3Pipeline");
  const hasT5 = Array.isArray(index.text_encoder_3) && index.text_encoder_3[0] !== null;
  const cfgPath = join(root, "transformer", "config.json");
  const config = sd3TransformerConfigFromJson(readJsonObject(cfgPath, "transformer"), cfgPath);
  const scheduler = loadFlowScheduler(join(root, "scheduler"));
  const tokenizer = loadClipTokenizer(join(root, "tokenizer"));
  const tokenizer2 = loadClipTokenizer(join(root, "tokenizer_2"));
  const tokenizer3 = hasT5 ? loadT5Tokenizer(join(root, "tokenizer_3")) : null;
  const textEncoder = loadClipTextEncoder(join(root, "text_encoder"), opts.variant);
  const textEncoder2 = loadClipTextEncoder(join(root, "text_encoder_2"), opts.variant);
  const textEncoder3 = hasT5 ? loadT5Encoder(join(root, "text_encoder_3"), opts.variant) : null;
  for (const [name, te] of [["text_encoder", textEncoder], ["text_encoder_2", textEncoder2]] as const) {
    if (!te.withProjection) throw new Error(`${join(root, name)}: SD3 needs CLIPTextModelWithProjection (its pooled text_embeds)`);
  }
  const pooled = textEncoder.config.projectionDim + textEncoder2.config.projectionDim;
  if (pooled !== config.pooledProjectionDim) {
    throw new Error(`${cfgPath}: pooled_projection_dim ${config.pooledProjectionDim} ≠ the two CLIP projections ${textEncoder.config.projectionDim} + ${textEncoder2.config.projectionDim}`);
  }
  if (textEncoder3 && textEncoder3.config.dModel !== config.jointAttentionDim) {
    throw new Error(`${cfgPath}: joint_attention_dim ${config.jointAttentionDim} ≠ the T5 width d_model ${textEncoder3.config.dModel}`);
  }
  const transformer = loadDiffusersModule(join(root, "transformer"), () => new SD3Transformer2DModel(config), opts.variant);
  const vae = loadVae(join(root, "vae"), opts.variant);
  return { textEncoder, textEncoder2, textEncoder3, tokenizer, tokenizer2, tokenizer3, transformer, vae, scheduler };
}

export function disposeSD3Pipeline(p: SD3Pipeline): void {
  for (const m of [p.textEncoder, p.textEncoder2, p.textEncoder3, p.transformer, p.vae]) m?.dispose();
}

function idsTensor(rows: number[][]): Tensor {
  return tensor(BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0]!.length]);
}

/** _get_clip_prompt_embeds: hidden_states[-2] [N, 77, D] and the projected pooled [N, P]. */
export function sd3ClipEmbeds(te: ClipTextModel, tok: ClipTokenizer, prompts: string[]): { states: Tensor; pooled: Tensor } {
  return noGrad(() => tidy(() => {
    const enc = tok.encodeBatch(prompts, { maxLength: 77 });
    const out = te.forward(idsTensor(enc.ids), { outputHiddenStates: true });
    const hs = out.hiddenStates!;
    return { states: hs[hs.length - 2]!, pooled: out.textEmbeds! };
  }));
}

/** _get_t5_prompt_embeds: T5 last_hidden_state [N, maxSequenceLength, D] (no attention mask). */
export function t5PromptEmbeds(te: T5EncoderModel, tok: T5Tokenizer, prompts: string[], maxSequenceLength: number): Tensor {
  return noGrad(() => tidy(() => te.forward(idsTensor(tok.encode(prompts, maxSequenceLength).ids))));
}

export interface SD3PromptEmbeds {
  /** [N, 77 + maxSequenceLength, joint_attention_dim]. */
  promptEmbeds: Tensor;
  /** [N, pooled_projection_dim]. */
  pooledPromptEmbeds: Tensor;
}

/** StableDiffusion3Pipeline.encode_prompt for one list of prompts (prompt_2 = prompt_3 = prompt). */
export function encodeSD3Prompt(p: SD3Pipeline, prompts: string[], maxSequenceLength = 256): SD3PromptEmbeds {
  return noGrad(() => tidy(() => {
    const a = sd3ClipEmbeds(p.textEncoder, p.tokenizer, prompts);
    const b = sd3ClipEmbeds(p.textEncoder2, p.tokenizer2, prompts);
    const width = p.transformer.config.jointAttentionDim;
    const t5 = p.textEncoder3 && p.tokenizer3
      ? t5PromptEmbeds(p.textEncoder3, p.tokenizer3, prompts, maxSequenceLength)
      : zeros([prompts.length, 77, width]);
    const clip = cat([a.states, b.states], -1);
    const padded = clip.pad([0, width - clip.shape[2]!]);
    return { promptEmbeds: cat([padded, t5], 1), pooledPromptEmbeds: cat([a.pooled, b.pooled], -1) };
  }));
}

export interface SD3GenerateOptions {
  prompt: string;
  negativePrompt?: string;
  height?: number;
  width?: number;
  steps?: number;
  guidanceScale?: number;
  maxSequenceLength?: number;
  /** Initial latents [1, 16, H/8, W/8] (used as is); default drawn by the caller's `noise`. */
  latents: Tensor;
  onStep?: (step: number, latents: Tensor) => void;
}

export interface SD3GenerateResult {
  latents: Tensor;
  /** [1, 3, H, W] raw decoder output. */
  decoded: Tensor;
  /** [1, H, W, 3] in [0, 1] (diffusers' output_type "np"). */
  image: Tensor;
}

/** StableDiffusion3Pipeline.__call__ from a prompt string. */
export function generateSD3(p: SD3Pipeline, o: SD3GenerateOptions): SD3GenerateResult {
  const steps = o.steps ?? 28;
  const g = o.guidanceScale ?? 7;
  const f = vaeScaleFactor(p.vae.config);
  const height = o.height ?? p.transformer.config.sampleSize * f, width = o.width ?? p.transformer.config.sampleSize * f;
  const want = [1, p.transformer.config.inChannels, Math.floor(height / f), Math.floor(width / f)];
  if (o.latents.shape.join(",") !== want.join(",")) throw new Error(`generateSD3: latents must be [${want.join(", ")}] for ${height}×${width}, got [${o.latents.shape.join(", ")}]`);
  return noGrad(() => {
    const pos = encodeSD3Prompt(p, [o.prompt], o.maxSequenceLength ?? 256);
    const neg = encodeSD3Prompt(p, [o.negativePrompt ?? ""], o.maxSequenceLength ?? 256);
    const cfg = g > 1;
    const states = cfg ? cat([neg.promptEmbeds, pos.promptEmbeds], 0) : pos.promptEmbeds;
    const pooled = cfg ? cat([neg.pooledPromptEmbeds, pos.pooledPromptEmbeds], 0) : pos.pooledPromptEmbeds;
    const schedule = flowSetTimesteps(p.scheduler, steps);
    const latents = flowSample({
      latents: o.latents, schedule, guidanceScale: g, onStep: o.onStep,
      velocity: (x, t) => p.transformer.forward({ hiddenStates: x, encoderHiddenStates: states, pooledProjections: pooled, timestep: full([x.shape[0]!], t) }),
    });
    const decoded = p.vae.decodeLatents(latents);
    const image = decoded.div(2).add(0.5).clamp(0, 1).permute([0, 2, 3, 1]).contiguous();
    for (const t of [pos.promptEmbeds, pos.pooledPromptEmbeds, neg.promptEmbeds, neg.pooledPromptEmbeds]) t.dispose();
    return { latents, decoded, image };
  });
}
