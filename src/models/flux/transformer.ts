// diffusers' FluxTransformer2DModel (v0.30):
//
//   packed latents x [N, L, 4C] (2×2 patches) → x_embedder;  context c = context_embedder(T5 states)
//   temb = timestep_embedder(sincos(1000·t)) [+ guidance_embedder(sincos(1000·g))] + text_embedder(pooled)
//   RoPE: for ids = [txt_ids; img_ids] [N, Lc + L, 3], axis i rotates axes_dims_rope[i] channels of
//   every head by angle id_i · θ^(−2k/d_i) (θ = 10000), on interleaved (even, odd) pairs
//   double-stream blocks (FluxTransformerBlock): AdaLayerNormZero on both streams, one attention
//   over [c; x] (context first) with RMS q/k norms and RoPE, gated residuals, tanh-GELU MLPs;
//   then [c; x] concatenated through single-stream blocks (attention and MLP in parallel, one
//   proj_out over both); keep the image tokens → norm_out → proj_out.
import { z } from "zod";
import { Module, ModuleList } from "../../nn/module.js";
import { LayerNorm, Linear } from "../../nn/layers.js";
import { attention, cat, tensor, tidy, type Tensor } from "../../tensor/index.js";
import { parseConfig } from "../../util/config-json.js";
import {
  AdaLayerNormContinuous, AdaLayerNormZero, AdaLayerNormZeroSingle, CombinedTimestepTextEmbeddings, GeluFeedForward, RMSNorm, modulate,
} from "../sd3/layers.js";

export interface FluxTransformerConfig {
  patchSize: number;
  inChannels: number;
  outChannels: number;
  numLayers: number;
  numSingleLayers: number;
  attentionHeadDim: number;
  numAttentionHeads: number;
  jointAttentionDim: number;
  pooledProjectionDim: number;
  guidanceEmbeds: boolean;
  axesDimsRope: number[];
}

const fluxJson = z.looseObject({
  patch_size: z.number().int().positive().default(1),
  in_channels: z.number().int().positive().default(64),
  out_channels: z.number().int().positive().nullable().default(null),
  num_layers: z.number().int().nonnegative().default(19),
  num_single_layers: z.number().int().nonnegative().default(38),
  attention_head_dim: z.number().int().positive().default(128),
  num_attention_heads: z.number().int().positive().default(24),
  joint_attention_dim: z.number().int().positive().default(4096),
  pooled_projection_dim: z.number().int().positive().default(768),
  guidance_embeds: z.boolean().default(false),
  axes_dims_rope: z.array(z.number().int().positive()).default([16, 56, 56]),
});

/** Reads transformer/config.json of a Flux folder (missing fields take diffusers' defaults). */
export function fluxTransformerConfigFromJson(json: unknown, source = "transformer/config.json"): FluxTransformerConfig {
  const j = parseConfig(fluxJson, json, source, "FluxTransformer2DModel config");
  const c: FluxTransformerConfig = {
    patchSize: j.patch_size,
    inChannels: j.in_channels,
    outChannels: j.out_channels ?? j.in_channels,
    numLayers: j.num_layers,
    numSingleLayers: j.num_single_layers,
    attentionHeadDim: j.attention_head_dim,
    numAttentionHeads: j.num_attention_heads,
    jointAttentionDim: j.joint_attention_dim,
    pooledProjectionDim: j.pooled_projection_dim,
    guidanceEmbeds: j.guidance_embeds,
    axesDimsRope: j.axes_dims_rope,
  };
  const sum = c.axesDimsRope.reduce((a, b) => a + b, 0);
  if (sum !== c.attentionHeadDim || c.axesDimsRope.some((d) => d % 2 !== 0)) {
    throw new Error(`${source}: axes_dims_rope ${JSON.stringify(c.axesDimsRope)} must be even and sum to attention_head_dim ${c.attentionHeadDim}`);
  }
  return c;
}

/** The config as diffusers writes transformer/config.json. */
export function fluxTransformerConfigToJson(c: FluxTransformerConfig): Record<string, unknown> {
  return {
    _class_name: "FluxTransformer2DModel", _diffusers_version: "0.30.0",
    attention_head_dim: c.attentionHeadDim, axes_dims_rope: c.axesDimsRope, guidance_embeds: c.guidanceEmbeds,
    in_channels: c.inChannels, joint_attention_dim: c.jointAttentionDim, num_attention_heads: c.numAttentionHeads,
    num_layers: c.numLayers, num_single_layers: c.numSingleLayers, patch_size: c.patchSize, pooled_projection_dim: c.pooledProjectionDim,
  };
}

/** cos and sin of the rotary angles, each [N, 1, L, headDim/2, 1], from ids [N, L, n_axes]. */
export interface RotaryTables { cos: Tensor; sin: Tensor }

/**
 * FluxPosEmbed / EmbedND: per axis i and pair k < d_i/2, angle = id_i · θ^(−2k/d_i). Computed in
 * float64 (as diffusers does: float64 frequencies) and rounded to float32 once.
 */
export function fluxRotaryTables(ids: Tensor, axesDims: number[], theta = 10000): RotaryTables {
  if (ids.ndim !== 3 || ids.shape[2] !== axesDims.length) {
    throw new Error(`Flux RoPE: ids must be [N, L, ${axesDims.length}], got [${ids.shape.join(", ")}]`);
  }
  const [n, l] = ids.shape as [number, number, number];
  const values = ids.to("f32").toFloat32Array();
  const half = axesDims.reduce((a, b) => a + b, 0) / 2;
  const cos = new Float32Array(n * l * half), sin = new Float32Array(n * l * half);
  for (let r = 0; r < n * l; r++) {
    let k = 0;
    axesDims.forEach((d, axis) => {
      const pos = values[r * axesDims.length + axis]!;
      for (let j = 0; j < d / 2; j++, k++) {
        const angle = pos * (1 / theta ** ((2 * j) / d));
        cos[r * half + k] = Math.cos(angle);
        sin[r * half + k] = Math.sin(angle);
      }
    });
  }
  const shape = [n, 1, l, half, 1];
  return { cos: tensor(cos, shape, { device: ids.device }), sin: tensor(sin, shape, { device: ids.device }) };
}

/** Rotates interleaved pairs (x_2k, x_2k+1) of x [N, H, L, D] by the table's angles. */
export function applyRotary(x: Tensor, rope: RotaryTables): Tensor {
  const [n, h, l, d] = x.shape as [number, number, number, number];
  const pairs = x.reshape([n, h, l, d / 2, 2]);
  const even = pairs.slice(-1, 0, 1), odd = pairs.slice(-1, 1, 2);
  const cos = rope.cos.dtype === x.dtype ? rope.cos : rope.cos.to(x.dtype);
  const sin = rope.sin.dtype === x.dtype ? rope.sin : rope.sin.to(x.dtype);
  const outEven = cos.mul(even).sub(sin.mul(odd));
  const outOdd = sin.mul(even).add(cos.mul(odd));
  return cat([outEven, outOdd], -1).reshape([n, h, l, d]);
}

function splitHeads(t: Tensor, heads: number, headDim: number): Tensor {
  const [n, l] = t.shape as [number, number];
  return t.reshape([n, l, heads, headDim]).transpose(1, 2);
}

/** Attention of a double-stream block (FluxAttnProcessor2_0): context tokens first in the joint sequence. */
export class FluxJointAttention extends Module {
  readonly norm_q: RMSNorm;
  readonly norm_k: RMSNorm;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly add_k_proj: Linear;
  readonly add_v_proj: Linear;
  readonly add_q_proj: Linear;
  readonly to_out: ModuleList<Linear>;
  readonly to_add_out: Linear;
  readonly norm_added_q: RMSNorm;
  readonly norm_added_k: RMSNorm;
  constructor(dim: number, readonly heads: number, readonly headDim: number) {
    super();
    const inner = heads * headDim;
    this.norm_q = this.child("norm_q", new RMSNorm(headDim));
    this.norm_k = this.child("norm_k", new RMSNorm(headDim));
    this.to_q = this.child("to_q", new Linear(dim, inner));
    this.to_k = this.child("to_k", new Linear(dim, inner));
    this.to_v = this.child("to_v", new Linear(dim, inner));
    this.add_k_proj = this.child("add_k_proj", new Linear(dim, inner));
    this.add_v_proj = this.child("add_v_proj", new Linear(dim, inner));
    this.add_q_proj = this.child("add_q_proj", new Linear(dim, inner));
    this.to_out = this.child("to_out", new ModuleList([new Linear(inner, dim)]));
    this.to_add_out = this.child("to_add_out", new Linear(inner, dim));
    this.norm_added_q = this.child("norm_added_q", new RMSNorm(headDim));
    this.norm_added_k = this.child("norm_added_k", new RMSNorm(headDim));
  }
  forward(x: Tensor, c: Tensor, rope: RotaryTables): { x: Tensor; c: Tensor } {
    const H = this.heads, D = this.headDim;
    let q = cat([this.norm_added_q.forward(splitHeads(this.add_q_proj.forward(c), H, D)), this.norm_q.forward(splitHeads(this.to_q.forward(x), H, D))], 2);
    let k = cat([this.norm_added_k.forward(splitHeads(this.add_k_proj.forward(c), H, D)), this.norm_k.forward(splitHeads(this.to_k.forward(x), H, D))], 2);
    const v = cat([splitHeads(this.add_v_proj.forward(c), H, D), splitHeads(this.to_v.forward(x), H, D)], 2);
    q = applyRotary(q, rope);
    k = applyRotary(k, rope);
    const n = x.shape[0]!, lc = c.shape[1]!, lx = x.shape[1]!;
    const out = attention(q, k, v).transpose(1, 2).reshape([n, lc + lx, H * D]);
    const [oc, ox] = out.split([lc, lx], 1) as [Tensor, Tensor];
    return { x: this.to_out.at(0).forward(ox), c: this.to_add_out.forward(oc) };
  }
}

/** FluxTransformerBlock (double stream). */
export class FluxTransformerBlock extends Module {
  readonly norm1: AdaLayerNormZero;
  readonly norm1_context: AdaLayerNormZero;
  readonly attn: FluxJointAttention;
  readonly norm2: LayerNorm;
  readonly ff: GeluFeedForward;
  readonly norm2_context: LayerNorm;
  readonly ff_context: GeluFeedForward;
  constructor(dim: number, heads: number, headDim: number) {
    super();
    this.norm1 = this.child("norm1", new AdaLayerNormZero(dim));
    this.norm1_context = this.child("norm1_context", new AdaLayerNormZero(dim));
    this.attn = this.child("attn", new FluxJointAttention(dim, heads, headDim));
    this.norm2 = this.child("norm2", new LayerNorm(dim, 1e-6, false));
    this.ff = this.child("ff", new GeluFeedForward(dim));
    this.norm2_context = this.child("norm2_context", new LayerNorm(dim, 1e-6, false));
    this.ff_context = this.child("ff_context", new GeluFeedForward(dim));
  }
  forward(x: Tensor, c: Tensor, temb: Tensor, rope: RotaryTables): { x: Tensor; c: Tensor } {
    return tidy(() => {
      const nx = this.norm1.forward(x, temb);
      const nc = this.norm1_context.forward(c, temb);
      const a = this.attn.forward(nx.x, nc.x, rope);
      let h = x.add(nx.gateMsa.unsqueeze(1).mul(a.x));
      h = h.add(nx.gateMlp.unsqueeze(1).mul(this.ff.forward(modulate(this.norm2.forward(h), nx.shiftMlp, nx.scaleMlp))));
      let hc = c.add(nc.gateMsa.unsqueeze(1).mul(a.c));
      hc = hc.add(nc.gateMlp.unsqueeze(1).mul(this.ff_context.forward(modulate(this.norm2_context.forward(hc), nc.shiftMlp, nc.scaleMlp))));
      return { x: h, c: hc };
    });
  }
}

/** Attention of a single-stream block (FluxSingleAttnProcessor2_0): q/k/v, RMS q/k norms, RoPE, no output projection. */
export class FluxSingleAttention extends Module {
  readonly norm_q: RMSNorm;
  readonly norm_k: RMSNorm;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  constructor(dim: number, readonly heads: number, readonly headDim: number) {
    super();
    const inner = heads * headDim;
    this.norm_q = this.child("norm_q", new RMSNorm(headDim));
    this.norm_k = this.child("norm_k", new RMSNorm(headDim));
    this.to_q = this.child("to_q", new Linear(dim, inner));
    this.to_k = this.child("to_k", new Linear(dim, inner));
    this.to_v = this.child("to_v", new Linear(dim, inner));
  }
  forward(x: Tensor, rope: RotaryTables): Tensor {
    const H = this.heads, D = this.headDim;
    const q = applyRotary(this.norm_q.forward(splitHeads(this.to_q.forward(x), H, D)), rope);
    const k = applyRotary(this.norm_k.forward(splitHeads(this.to_k.forward(x), H, D)), rope);
    const v = splitHeads(this.to_v.forward(x), H, D);
    const [n, l] = x.shape as [number, number];
    return attention(q, k, v).transpose(1, 2).reshape([n, l, H * D]);
  }
}

/** FluxSingleTransformerBlock: x + gate · proj_out([attn(norm x); gelu(proj_mlp(norm x))]). */
export class FluxSingleTransformerBlock extends Module {
  readonly norm: AdaLayerNormZeroSingle;
  readonly proj_mlp: Linear;
  readonly proj_out: Linear;
  readonly attn: FluxSingleAttention;
  constructor(dim: number, heads: number, headDim: number, mlpRatio = 4) {
    super();
    const mlp = Math.floor(dim * mlpRatio);
    this.norm = this.child("norm", new AdaLayerNormZeroSingle(dim));
    this.proj_mlp = this.child("proj_mlp", new Linear(dim, mlp));
    this.proj_out = this.child("proj_out", new Linear(dim + mlp, dim));
    this.attn = this.child("attn", new FluxSingleAttention(dim, heads, headDim));
  }
  forward(x: Tensor, temb: Tensor, rope: RotaryTables): Tensor {
    return tidy(() => {
      const n = this.norm.forward(x, temb);
      const mlp = this.proj_mlp.forward(n.x).geluTanh();
      const a = this.attn.forward(n.x, rope);
      return x.add(n.gate.unsqueeze(1).mul(this.proj_out.forward(cat([a, mlp], 2))));
    });
  }
}

export interface FluxForwardInput {
  /** Packed latents [N, L, in_channels]. */
  hiddenStates: Tensor;
  /** T5 states [N, Lc, joint_attention_dim]. */
  encoderHiddenStates: Tensor;
  /** CLIP pooled [N, pooled_projection_dim]. */
  pooledProjections: Tensor;
  /** [N] σ in [0, 1] (the model multiplies by 1000). */
  timestep: Tensor;
  /** [N, L, 3] (0, row, col) per packed token. */
  imgIds: Tensor;
  /** [N, Lc, 3] (zeros for Flux). */
  txtIds: Tensor;
  /** [N] guidance scale (models with guidance_embeds only; multiplied by 1000 inside). */
  guidance?: Tensor | null;
}

/** diffusers' FluxTransformer2DModel. */
export class FluxTransformer2DModel extends Module {
  readonly time_text_embed: CombinedTimestepTextEmbeddings;
  readonly context_embedder: Linear;
  readonly x_embedder: Linear;
  readonly transformer_blocks: ModuleList<FluxTransformerBlock>;
  readonly single_transformer_blocks: ModuleList<FluxSingleTransformerBlock>;
  readonly norm_out: AdaLayerNormContinuous;
  readonly proj_out: Linear;
  constructor(readonly config: FluxTransformerConfig) {
    super();
    const c = config;
    const dim = c.numAttentionHeads * c.attentionHeadDim;
    this.time_text_embed = this.child("time_text_embed", new CombinedTimestepTextEmbeddings(dim, c.pooledProjectionDim, c.guidanceEmbeds));
    this.context_embedder = this.child("context_embedder", new Linear(c.jointAttentionDim, dim));
    this.x_embedder = this.child("x_embedder", new Linear(c.inChannels, dim));
    this.transformer_blocks = this.child("transformer_blocks", new ModuleList(Array.from({ length: c.numLayers },
      () => new FluxTransformerBlock(dim, c.numAttentionHeads, c.attentionHeadDim))));
    this.single_transformer_blocks = this.child("single_transformer_blocks", new ModuleList(Array.from({ length: c.numSingleLayers },
      () => new FluxSingleTransformerBlock(dim, c.numAttentionHeads, c.attentionHeadDim))));
    this.norm_out = this.child("norm_out", new AdaLayerNormContinuous(dim, dim));
    this.proj_out = this.child("proj_out", new Linear(dim, c.patchSize * c.patchSize * c.outChannels));
  }

  forward(input: FluxForwardInput): Tensor {
    const c = this.config;
    const { hiddenStates, encoderHiddenStates, pooledProjections } = input;
    if (hiddenStates.ndim !== 3 || hiddenStates.shape[2] !== c.inChannels) {
      throw new Error(`FluxTransformer2DModel: packed latents must be [N, L, ${c.inChannels}], got [${hiddenStates.shape.join(", ")}]`);
    }
    if (c.guidanceEmbeds && !input.guidance) throw new Error("FluxTransformer2DModel: this model has guidance_embeds true; pass guidance (e.g. 3.5 per sample)");
    return tidy(() => {
      const n = hiddenStates.shape[0]!;
      let x = this.x_embedder.forward(hiddenStates);
      const perSample = (t: Tensor) => (t.ndim === 0 ? t.reshape([1]).expand([n]) : t);
      const t = perSample(input.timestep).to(x.dtype).mul(1000);
      const g = c.guidanceEmbeds && input.guidance ? perSample(input.guidance).to(x.dtype).mul(1000) : null;
      const temb = this.time_text_embed.forward(t, pooledProjections, g);
      let ctx = this.context_embedder.forward(encoderHiddenStates);
      const rope = fluxRotaryTables(cat([input.txtIds, input.imgIds], 1), c.axesDimsRope);
      for (const block of this.transformer_blocks) {
        const out = block.forward(x, ctx, temb, rope);
        x = out.x;
        ctx = out.c;
      }
      const lc = ctx.shape[1]!;
      let joint = cat([ctx, x], 1);
      for (const block of this.single_transformer_blocks) joint = block.forward(joint, temb, rope);
      x = joint.slice(1, lc);
      return this.proj_out.forward(this.norm_out.forward(x, temb));
    });
  }
}

// ---- FluxPipeline's latent packing ------------------------------------------------------------

/** _pack_latents: [N, C, H, W] → [N, (H/2)(W/2), 4C], channel-major c·4 + dy·2 + dx. */
export function packLatents(latents: Tensor): Tensor {
  const [n, ch, h, w] = latents.shape as [number, number, number, number];
  if (h % 2 !== 0 || w % 2 !== 0) throw new Error(`packLatents: latent height and width must be even, got ${h}×${w}`);
  return latents.reshape([n, ch, h / 2, 2, w / 2, 2]).permute([0, 2, 4, 1, 3, 5]).reshape([n, (h / 2) * (w / 2), ch * 4]);
}

/** _unpack_latents for a latent grid of h × w (= 2·(pixels // 16) in FluxPipeline v0.30). */
export function unpackLatents(packed: Tensor, h: number, w: number): Tensor {
  const [n, l, ch4] = packed.shape as [number, number, number];
  if (l !== (h / 2) * (w / 2)) throw new Error(`unpackLatents: ${l} tokens do not make a ${h}×${w} latent`);
  return packed.reshape([n, h / 2, w / 2, ch4 / 4, 2, 2]).permute([0, 3, 1, 4, 2, 5]).reshape([n, ch4 / 4, h, w]);
}

/** _prepare_latent_image_ids: [n, (h/2)(w/2), 3] = (0, row, col) for a latent grid h × w. */
export function latentImageIds(n: number, h: number, w: number, device?: string): Tensor {
  const rows = h / 2, cols = w / 2;
  const ids = new Float32Array(n * rows * cols * 3);
  for (let b = 0; b < n; b++) {
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const i = ((b * rows + r) * cols + c) * 3;
        ids[i + 1] = r;
        ids[i + 2] = c;
      }
    }
  }
  return tensor(ids, [n, rows * cols, 3], { device });
}
