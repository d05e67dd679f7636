// VAE and text-encoder names: diffusers / transformers ↔ the original Stable Diffusion single file.
//
// VAE (`first_stage_model.`): encoder.down_blocks.I.resnets.J ↔ encoder.down.I.block.J,
// encoder.down_blocks.I.downsamplers.0 ↔ encoder.down.I.downsample, decoder.up_blocks.I ↔
// decoder.up.(N−1−I) (the original counts decoder levels from the bottom), mid_block.resnets.0/1
// ↔ mid.block_1/2, mid_block.attentions.0 ↔ mid.attn_1 with group_norm ↔ norm, to_q/k/v ↔ q/k/v,
// to_out.0 ↔ proj_out — the original's attention projections are 1×1 convolutions
// ([C, C, 1, 1]) where diffusers' are linear ([C, C]); conv_shortcut ↔ nin_shortcut,
// conv_norm_out ↔ norm_out.
//
// Text encoders: transformers' CLIPTextModel names are kept under a prefix for OpenAI CLIP
// (SD1.x `cond_stage_model.transformer.`, SDXL `conditioner.embedders.0.transformer.`). OpenCLIP
// encoders (SD2.x `cond_stage_model.model.`, SDXL's second `conditioner.embedders.1.model.`) use
// open_clip's names: transformer.resblocks.L.{ln_1, ln_2, attn.in_proj_*, attn.out_proj,
// mlp.c_fc, mlp.c_proj}, token_embedding, positional_embedding, ln_final, and text_projection as
// a [width, projection] matrix (x @ P) — the transpose of transformers' Linear weight. q, k and v
// are one in_proj tensor, stacked along dim 0 in that order.
//
// Every transform is a rename, a reshape, a dim-0 concatenation/split or a 2-D transpose, done
// on the stored bytes, so any dtype converts and a round trip is bit-identical.
import type { RawTensor } from "../../io/safetensors.js";

const ELEMENT_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8,
};

export function rawReshape(t: RawTensor, shape: number[]): RawTensor {
  const n = (s: number[]) => s.reduce((a, b) => a * b, 1);
  if (n(shape) !== n(t.shape)) throw new Error(`cannot reshape [${t.shape.join(", ")}] to [${shape.join(", ")}]`);
  return { dtype: t.dtype, shape: [...shape], bytes: t.bytes };
}

/** Concatenation along dim 0 (C order: the byte strings one after another). */
export function rawConcat0(ts: RawTensor[]): RawTensor {
  const first = ts[0]!;
  for (const t of ts) {
    if (t.dtype !== first.dtype || t.shape.slice(1).join(",") !== first.shape.slice(1).join(",")) {
      throw new Error(`cannot stack ${ts.map((x) => `${x.dtype}[${x.shape.join(", ")}]`).join(", ")} along dim 0`);
    }
  }
  const bytes = new Uint8Array(ts.reduce((a, t) => a + t.bytes.length, 0));
  let at = 0;
  for (const t of ts) {
    bytes.set(t.bytes, at);
    at += t.bytes.length;
  }
  return { dtype: first.dtype, shape: [ts.reduce((a, t) => a + t.shape[0]!, 0), ...first.shape.slice(1)], bytes };
}

/** `parts` equal pieces along dim 0. */
export function rawSplit0(t: RawTensor, parts: number): RawTensor[] {
  const rows = t.shape[0]!;
  if (t.shape.length === 0 || rows % parts !== 0) throw new Error(`cannot split [${t.shape.join(", ")}] into ${parts} equal parts along dim 0`);
  const size = t.bytes.length / parts;
  return Array.from({ length: parts }, (_, i) => ({ dtype: t.dtype, shape: [rows / parts, ...t.shape.slice(1)], bytes: t.bytes.slice(i * size, (i + 1) * size) }));
}

/** The transpose of a 2-D tensor, contiguous. */
export function rawTranspose2d(t: RawTensor): RawTensor {
  if (t.shape.length !== 2) throw new Error(`transpose needs a 2-D tensor, got [${t.shape.join(", ")}]`);
  const [r, c] = t.shape as [number, number];
  const e = ELEMENT_BYTES[t.dtype]!;
  const out = new Uint8Array(t.bytes.length);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < c; j++) out.set(t.bytes.subarray((i * c + j) * e, (i * c + j + 1) * e), (j * r + i) * e);
  }
  return { dtype: t.dtype, shape: [c, r], bytes: out };
}

// ---- VAE --------------------------------------------------------------------------------------

const VAE_ATTENTION: [string, string][] = [["group_norm", "norm"], ["to_q", "q"], ["to_k", "k"], ["to_v", "v"], ["to_out.0", "proj_out"]];

/** The number of decoder up blocks in a list of diffusers VAE names (needed for the reversed numbering). */
export function vaeUpBlockCount(diffusersNames: Iterable<string>): number {
  let n = 0;
  for (const k of diffusersNames) {
    const m = /^decoder\.up_blocks\.(\d+)\./.exec(k);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

/** diffusers VAE name → original; null when the name has no original spelling. */
export function vaeToOriginal(name: string, upBlocks: number): string | null {
  let m: RegExpExecArray | null;
  const rest = (r: string | undefined) => (r === undefined ? "" : r);
  const resnetRest = (r: string) => r.replace(/^conv_shortcut(?=\.|$)/, "nin_shortcut");
  if ((m = /^(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)(\..+)$/.exec(name))) {
    return `${m[1]}.${m[2] === "conv_norm_out" ? "norm_out" : m[2]}${m[3]}`;
  }
  if ((m = /^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(name))) return `encoder.down.${m[1]}.block.${m[2]}.${resnetRest(m[3]!)}`;
  if ((m = /^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)$/.exec(name))) return `encoder.down.${m[1]}.downsample.${m[2]}`;
  if ((m = /^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(name))) {
    const i = upBlocks - 1 - Number(m[1]);
    return i < 0 ? null : `decoder.up.${i}.block.${m[2]}.${resnetRest(m[3]!)}`;
  }
  if ((m = /^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$/.exec(name))) {
    const i = upBlocks - 1 - Number(m[1]);
    return i < 0 ? null : `decoder.up.${i}.upsample.${m[2]}`;
  }
  if ((m = /^(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)$/.exec(name))) return `${m[1]}.mid.block_${Number(m[2]) + 1}.${resnetRest(m[3]!)}`;
  if ((m = /^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)$/.exec(name))) {
    for (const [d, o] of VAE_ATTENTION) if (m[2]!.startsWith(`${d}.`)) return `${m[1]}.mid.attn_1.${o}${m[2]!.slice(d.length)}`;
    return null;
  }
  if ((m = /^(quant_conv|post_quant_conv)(\..+)$/.exec(name))) return `${m[1]}${rest(m[2])}`;
  return null;
}

/** original VAE name → diffusers; null when unknown. */
export function vaeToDiffusers(name: string, upBlocks: number): string | null {
  let m: RegExpExecArray | null;
  const resnetRest = (r: string) => r.replace(/^nin_shortcut(?=\.|$)/, "conv_shortcut");
  if ((m = /^(encoder|decoder)\.(conv_in|conv_out|norm_out)(\..+)$/.exec(name))) {
    return `${m[1]}.${m[2] === "norm_out" ? "conv_norm_out" : m[2]}${m[3]}`;
  }
  if ((m = /^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$/.exec(name))) return `encoder.down_blocks.${m[1]}.resnets.${m[2]}.${resnetRest(m[3]!)}`;
  if ((m = /^encoder\.down\.(\d+)\.downsample\.(.+)$/.exec(name))) return `encoder.down_blocks.${m[1]}.downsamplers.0.${m[2]}`;
  if ((m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$/.exec(name))) {
    const i = upBlocks - 1 - Number(m[1]);
    return i < 0 ? null : `decoder.up_blocks.${i}.resnets.${m[2]}.${resnetRest(m[3]!)}`;
  }
  if ((m = /^decoder\.up\.(\d+)\.upsample\.(.+)$/.exec(name))) {
    const i = upBlocks - 1 - Number(m[1]);
    return i < 0 ? null : `decoder.up_blocks.${i}.upsamplers.0.${m[2]}`;
  }
  if ((m = /^(encoder|decoder)\.mid\.block_([12])\.(.+)$/.exec(name))) return `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${resnetRest(m[3]!)}`;
  if ((m = /^(encoder|decoder)\.mid\.attn_1\.(.+)$/.exec(name))) {
    for (const [d, o] of VAE_ATTENTION) if (m[2]!.startsWith(`${o}.`)) return `${m[1]}.mid_block.attentions.0.${d}${m[2]!.slice(o.length)}`;
    return null;
  }
  if ((m = /^(quant_conv|post_quant_conv)(\..+)$/.exec(name))) return `${m[1]}${m[2]}`;
  return null;
}

/** Whether an original VAE name is one of the attention projections stored as 1×1 convolutions. */
export function isVaeConvAttention(originalName: string): boolean {
  return /\.mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(originalName);
}

// ---- OpenCLIP text encoder ------------------------------------------------------------------------

const OPENCLIP_LAYER_PARTS: [string, string][] = [
  ["layer_norm1", "ln_1"], ["layer_norm2", "ln_2"], ["mlp.fc1", "mlp.c_fc"], ["mlp.fc2", "mlp.c_proj"], ["self_attn.out_proj", "attn.out_proj"],
];
const OPENCLIP_TOP: [string, string][] = [
  ["text_model.embeddings.token_embedding.weight", "token_embedding.weight"],
  ["text_model.embeddings.position_embedding.weight", "positional_embedding"],
  ["text_model.final_layer_norm.weight", "ln_final.weight"],
  ["text_model.final_layer_norm.bias", "ln_final.bias"],
];

/**
 * transformers CLIP names → open_clip names, with the q/k/v merge and the projection transpose.
 * `read` gives a tensor by transformers name; returns the open_clip tensors and the transformers
 * names it could not place.
 */
export function clipToOpenClip(names: string[], read: (name: string) => RawTensor): { tensors: Map<string, RawTensor>; unmapped: string[] } {
  const tensors = new Map<string, RawTensor>();
  const unmapped: string[] = [];
  const qkv = new Map<string, Partial<Record<"q" | "k" | "v", string>>>();
  for (const name of names) {
    const top = OPENCLIP_TOP.find(([d]) => d === name);
    if (top) {
      tensors.set(top[1], read(name));
      continue;
    }
    if (name === "text_projection.weight") {
      tensors.set("text_projection", rawTranspose2d(read(name)));
      continue;
    }
    const m = /^text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(name);
    if (!m) {
      unmapped.push(name);
      continue;
    }
    const [, layer, part, kind] = m as unknown as [string, string, string, string];
    const proj = /^self_attn\.([qkv])_proj$/.exec(part);
    if (proj) {
      const key = `transformer.resblocks.${layer}.attn.in_proj_${kind}`;
      const entry = qkv.get(key) ?? {};
      entry[proj[1] as "q" | "k" | "v"] = name;
      qkv.set(key, entry);
      continue;
    }
    const p = OPENCLIP_LAYER_PARTS.find(([d]) => d === part);
    if (!p) {
      unmapped.push(name);
      continue;
    }
    tensors.set(`transformer.resblocks.${layer}.${p[1]}.${kind}`, read(name));
  }
  for (const [key, parts] of qkv) {
    if (!parts.q || !parts.k || !parts.v) {
      unmapped.push(...Object.values(parts) as string[]);
      continue;
    }
    tensors.set(key, rawConcat0([read(parts.q), read(parts.k), read(parts.v)]));
  }
  return { tensors, unmapped };
}

/**
 * open_clip names → transformers CLIP names (the inverse of clipToOpenClip). Names open_clip has
 * and transformers does not (logit_scale, attn_mask) come back in `unmapped`.
 */
export function openClipToClip(names: string[], read: (name: string) => RawTensor): { tensors: Map<string, RawTensor>; unmapped: string[] } {
  const tensors = new Map<string, RawTensor>();
  const unmapped: string[] = [];
  for (const name of names) {
    const top = OPENCLIP_TOP.find(([, o]) => o === name);
    if (top) {
      tensors.set(top[0], read(name));
      continue;
    }
    if (name === "text_projection") {
      tensors.set("text_projection.weight", rawTranspose2d(read(name)));
      continue;
    }
    const m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(name);
    if (!m) {
      unmapped.push(name);
      continue;
    }
    const [, layer, part] = m as unknown as [string, string, string];
    const inProj = /^attn\.in_proj_(weight|bias)$/.exec(part);
    if (inProj) {
      const [q, k, v] = rawSplit0(read(name), 3);
      tensors.set(`text_model.encoder.layers.${layer}.self_attn.q_proj.${inProj[1]}`, q!);
      tensors.set(`text_model.encoder.layers.${layer}.self_attn.k_proj.${inProj[1]}`, k!);
      tensors.set(`text_model.encoder.layers.${layer}.self_attn.v_proj.${inProj[1]}`, v!);
      continue;
    }
    const pm = /^(.+)\.(weight|bias)$/.exec(part);
    const p = pm ? OPENCLIP_LAYER_PARTS.find(([, o]) => o === pm[1]) : undefined;
    if (!pm || !p) {
      unmapped.push(name);
      continue;
    }
    tensors.set(`text_model.encoder.layers.${layer}.${p[0]}.${pm[2]}`, read(name));
  }
  return { tensors, unmapped };
}
