// SDXL's prompt encoding, as StableDiffusionXLPipeline.encode_prompt (diffusers 0.30) does it
// without clip skip or LoRA scaling:
//   for each (tokenizer, text encoder) pair: ids padded/truncated to 77 → hidden_states[-2]
//     (the penultimate layer, before the final layer norm);
//   hidden = cat([penultimate₁, penultimate₂], −1)            [N, 77, D₁ + D₂]
//   pooled = text_encoder_2's text_embeds (the projection of the final-LN state at the EOS token)
// and the negative branch of an absent negative prompt with force_zeros_for_empty_prompt: zeros.
import { cat, tensor, tidy, type Tensor } from "../../tensor/index.js";
import type { ClipTextModel } from "../clip/text-model.js";
import type { ClipTokenizer } from "../clip/tokenizer.js";

export interface SdxlTextEncoders {
  textEncoder: ClipTextModel;
  tokenizer: ClipTokenizer;
  /** CLIPTextModelWithProjection (its text_projection gives the pooled embedding). */
  textEncoder2: ClipTextModel;
  tokenizer2: ClipTokenizer;
}

/** `{ hidden, pooled }`: the UNet's cross-attention states and its added text embedding. */
export interface SdxlPromptEmbedding {
  hidden: Tensor;
  pooled: Tensor;
}

function deviceOf(m: ClipTextModel): string {
  return m.parameters()[0]!.device;
}

/** Token ids [N, L] of `prompts` for one encoder (padded to its max_position_embeddings). */
export function sdxlTokenIds(tokenizer: ClipTokenizer, encoder: ClipTextModel, prompts: string[]): Tensor {
  const length = encoder.config.maxPositionEmbeddings;
  const batch = tokenizer.encodeBatch(prompts, { maxLength: length, padding: "max_length", truncation: true });
  return tensor(batch.flat!, batch.shape!, { dtype: "i64", device: deviceOf(encoder) });
}

/** hidden_states[-2] of one encoder, and its output. */
function penultimate(encoder: ClipTextModel, ids: Tensor): { hidden: Tensor; textEmbeds?: Tensor } {
  const out = encoder.forward(ids, { outputHiddenStates: true });
  const states = out.hiddenStates!;
  return { hidden: states[states.length - 2]!, textEmbeds: out.textEmbeds };
}

/** Encodes prompts with both encoders (gradients flow when enabled; callers freeze them with noGrad). */
export function encodeSdxlPrompts(enc: SdxlTextEncoders, prompts: string[]): SdxlPromptEmbedding {
  if (prompts.length === 0) throw new Error("encodeSdxlPrompts: needs at least one prompt");
  if (!enc.textEncoder2.withProjection) {
    throw new Error("encodeSdxlPrompts: text_encoder_2 must be a CLIPTextModelWithProjection (its text_projection gives the pooled embedding)");
  }
  return tidy(() => {
    const first = penultimate(enc.textEncoder, sdxlTokenIds(enc.tokenizer, enc.textEncoder, prompts));
    const second = penultimate(enc.textEncoder2, sdxlTokenIds(enc.tokenizer2, enc.textEncoder2, prompts));
    return { hidden: cat([first.hidden, second.hidden], -1), pooled: second.textEmbeds! };
  });
}

/** The zero embeddings SDXL uses for an absent negative prompt (force_zeros_for_empty_prompt). */
export function zeroSdxlPromptEmbedding(enc: SdxlTextEncoders, n: number): SdxlPromptEmbedding {
  const device = deviceOf(enc.textEncoder);
  const l = enc.textEncoder.config.maxPositionEmbeddings;
  const d = enc.textEncoder.config.hiddenSize + enc.textEncoder2.config.hiddenSize;
  const p = enc.textEncoder2.config.projectionDim;
  return {
    hidden: tensor(new Float32Array(n * l * d), [n, l, d], { device }),
    pooled: tensor(new Float32Array(n * p), [n, p], { device }),
  };
}
