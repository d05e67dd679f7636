// diffusers' SD3Transformer2DModel (MMDiT, v0.30 layout; qk_norm "rms_norm" and SD3.5-medium's
// dual_attention_layers as later diffusers add them — those two are not in the v0.30 reference case):
//
//   latents [N, C, H, W] → pos_embed (p×p patch conv + the stored sin-cos table cropped to the
//   centre H/p × W/p of its pos_embed_max_size² grid) → tokens x [N, HW/p², D]
//   temb = timestep_embedder(sincos(t)) + text_embedder(pooled)         (t = σ·1000, float)
//   context c = context_embedder(encoder_hidden_states)
//   joint blocks: AdaLayerNormZero on x and c, one attention over [x; c] (each stream with its own
//   q/k/v and output projection), gated residuals, tanh-GELU MLPs; the last block is
//   context_pre_only (AdaLayerNormContinuous on c, no context output)
//   → norm_out (AdaLayerNormContinuous) → proj_out → unpatchify → [N, C_out, H, W]
import { z } from "zod";
import { Module, ModuleList } from "../../nn/module.js";
import { Conv2d, LayerNorm, Linear } from "../../nn/layers.js";
import { attention, cat, tensor, tidy, type Tensor } from "../../tensor/index.js";
import { parseConfig } from "../../util/config-json.js";
import {
  AdaLayerNormContinuous, AdaLayerNormZero, AdaLayerNormZeroX, CombinedTimestepTextEmbeddings, GeluFeedForward, RMSNorm, modulate,
} from "./layers.js";

export interface SD3TransformerConfig {
  sampleSize: number;
  patchSize: number;
  inChannels: number;
  outChannels: number;
  numLayers: number;
  attentionHeadDim: number;
  numAttentionHeads: number;
  jointAttentionDim: number;
  captionProjectionDim: number;
  pooledProjectionDim: number;
  posEmbedMaxSize: number;
  qkNorm: "rms_norm" | null;
  /** SD3.5-medium (MMDiT-X): the blocks with a second, image-only self-attention (attn2). */
  dualAttentionLayers?: number[];
}

const sd3Json = z.looseObject({
  sample_size: z.number().int().positive().default(128),
  patch_size: z.number().int().positive().default(2),
  in_channels: z.number().int().positive().default(16),
  out_channels: z.number().int().positive().nullable().default(16),
  num_layers: z.number().int().positive().default(18),
  attention_head_dim: z.number().int().positive().default(64),
  num_attention_heads: z.number().int().positive().default(18),
  joint_attention_dim: z.number().int().positive().default(4096),
  caption_projection_dim: z.number().int().positive().default(1152),
  pooled_projection_dim: z.number().int().positive().default(2048),
  pos_embed_max_size: z.number().int().positive().default(96),
  qk_norm: z.enum(["rms_norm"]).nullable().default(null),
  dual_attention_layers: z.array(z.number().int()).default([]),
});

/** Reads transformer/config.json of an SD3 folder (missing fields take diffusers' defaults). */
export function sd3TransformerConfigFromJson(json: unknown, source = "transformer/config.json"): SD3TransformerConfig {
  const j = parseConfig(sd3Json, json, source, "SD3Transformer2DModel config");
  const bad = j.dual_attention_layers.filter((i) => i < 0 || i >= j.num_layers);
  if (bad.length > 0) throw new Error(`${source}: dual_attention_layers ${JSON.stringify(bad)} are not block indices below num_layers ${j.num_layers}`);
  const config: SD3TransformerConfig = {
    sampleSize: j.sample_size,
    patchSize: j.patch_size,
    inChannels: j.in_channels,
    outChannels: j.out_channels ?? j.in_channels,
    numLayers: j.num_layers,
    attentionHeadDim: j.attention_head_dim,
    numAttentionHeads: j.num_attention_heads,
    jointAttentionDim: j.joint_attention_dim,
    captionProjectionDim: j.caption_projection_dim,
    pooledProjectionDim: j.pooled_projection_dim,
    posEmbedMaxSize: j.pos_embed_max_size,
    qkNorm: j.qk_norm,
    dualAttentionLayers: j.dual_attention_layers,
  };
  const inner = config.numAttentionHeads * config.attentionHeadDim;
  if (config.captionProjectionDim !== inner) {
    throw new Error(`${source}: caption_projection_dim ${config.captionProjectionDim} must equal num_attention_heads × attention_head_dim = ${inner}`);
  }
  return config;
}

/** The config as diffusers writes transformer/config.json. */
export function sd3TransformerConfigToJson(c: SD3TransformerConfig): Record<string, unknown> {
  return {
    _class_name: "SD3Transformer2DModel", _diffusers_version: "0.30.0",
    attention_head_dim: c.attentionHeadDim, caption_projection_dim: c.captionProjectionDim, in_channels: c.inChannels,
    joint_attention_dim: c.jointAttentionDim, num_attention_heads: c.numAttentionHeads, num_layers: c.numLayers,
    out_channels: c.outChannels, patch_size: c.patchSize, pooled_projection_dim: c.pooledProjectionDim,
    pos_embed_max_size: c.posEmbedMaxSize, sample_size: c.sampleSize, ...(c.qkNorm ? { qk_norm: c.qkNorm } : {}),
    ...(c.dualAttentionLayers && c.dualAttentionLayers.length > 0 ? { dual_attention_layers: c.dualAttentionLayers } : {}),
  };
}

/**
 * get_2d_sincos_pos_embed(dim, gridSize, base_size = sampleSize / patch): per grid cell the 1-D
 * sin-cos embedding of its (scaled) column in the first half and of its row in the second —
 * what a new PatchEmbed registers (checkpoints store it, so loading overwrites this).
 */
export function sincosPosEmbed2d(dim: number, gridSize: number, baseSize: number): Float32Array {
  if (dim % 4 !== 0) throw new Error(`sin-cos position embedding: the width ${dim} must be divisible by 4`);
  const quarter = dim / 4;
  const out = new Float32Array(gridSize * gridSize * dim);
  const omega = Array.from({ length: quarter }, (_, i) => 1 / 10000 ** (i / quarter));
  const scale = gridSize / baseSize;
  for (let r = 0; r < gridSize; r++) {
    for (let c = 0; c < gridSize; c++) {
      const base = (r * gridSize + c) * dim;
      const posW = c / scale, posH = r / scale;
      for (let i = 0; i < quarter; i++) {
        out[base + i] = Math.sin(posW * omega[i]!);
        out[base + quarter + i] = Math.cos(posW * omega[i]!);
        out[base + 2 * quarter + i] = Math.sin(posH * omega[i]!);
        out[base + 3 * quarter + i] = Math.cos(posH * omega[i]!);
      }
    }
  }
  return out;
}

/** PatchEmbed with pos_embed_max_size (no layer norm): conv patches + the cropped sin-cos table. */
export class SD3PatchEmbed extends Module {
  readonly proj: Conv2d;
  readonly pos_embed: Tensor;
  constructor(readonly config: SD3TransformerConfig) {
    super();
    const c = config;
    const dim = c.numAttentionHeads * c.attentionHeadDim;
    this.proj = this.child("proj", new Conv2d(c.inChannels, dim, c.patchSize, { stride: c.patchSize }));
    const table = sincosPosEmbed2d(dim, c.posEmbedMaxSize, Math.floor(c.sampleSize / c.patchSize));
    this.pos_embed = this.buffer("pos_embed", tensor(table, [1, c.posEmbedMaxSize * c.posEmbedMaxSize, dim]));
  }
  forward(latent: Tensor): Tensor {
    const [n, , hh, ww] = latent.shape as [number, number, number, number];
    const p = this.config.patchSize, max = this.config.posEmbedMaxSize;
    const h = Math.floor(hh / p), w = Math.floor(ww / p);
    if (h > max || w > max) throw new Error(`SD3 transformer: a ${hh}×${ww} latent is ${h}×${w} patches, more than pos_embed_max_size ${max}`);
    const x = this.proj.forward(latent).flatten(2).transpose(1, 2);
    const top = Math.floor((max - h) / 2), left = Math.floor((max - w) / 2);
    const dim = this.pos_embed.shape[2]!;
    const pos = this.pos_embed.reshape([1, max, max, dim]).slice(1, top, top + h).slice(2, left, left + w).reshape([1, h * w, dim]);
    void n;
    return x.add(pos.dtype === x.dtype ? pos : pos.to(x.dtype));
  }
}

/** Attention with added_kv_proj_dim: the image stream's to_q/k/v/out and the context's add_*_proj / to_add_out. */
export class JointAttention extends Module {
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly add_k_proj: Linear;
  readonly add_v_proj: Linear;
  readonly add_q_proj: Linear;
  readonly to_out: ModuleList<Linear>;
  readonly to_add_out: Linear | null;
  readonly norm_q: RMSNorm | null;
  readonly norm_k: RMSNorm | null;
  readonly norm_added_q: RMSNorm | null;
  readonly norm_added_k: RMSNorm | null;
  constructor(readonly dim: number, readonly heads: number, readonly headDim: number, contextPreOnly: boolean, qkNorm: boolean) {
    super();
    const inner = heads * headDim;
    // diffusers registers the norms before the projections
    this.norm_q = qkNorm ? this.child("norm_q", new RMSNorm(headDim)) : null;
    this.norm_k = qkNorm ? this.child("norm_k", new RMSNorm(headDim)) : null;
    this.to_q = this.child("to_q", new Linear(dim, inner));
    this.to_k = this.child("to_k", new Linear(dim, inner));
    this.to_v = this.child("to_v", new Linear(dim, inner));
    this.add_k_proj = this.child("add_k_proj", new Linear(dim, inner));
    this.add_v_proj = this.child("add_v_proj", new Linear(dim, inner));
    this.add_q_proj = this.child("add_q_proj", new Linear(dim, inner));
    this.to_out = this.child("to_out", new ModuleList([new Linear(inner, dim)]));
    this.to_add_out = contextPreOnly ? null : this.child("to_add_out", new Linear(inner, dim));
    this.norm_added_q = qkNorm ? this.child("norm_added_q", new RMSNorm(headDim)) : null;
    this.norm_added_k = qkNorm ? this.child("norm_added_k", new RMSNorm(headDim)) : null;
  }
  private heads_(t: Tensor): Tensor {
    const [n, l] = t.shape as [number, number];
    return t.reshape([n, l, this.heads, this.headDim]).transpose(1, 2);
  }
  /** x [N, Lx, D] (image tokens, first in the joint sequence), c [N, Lc, D] → both streams' outputs. */
  forward(x: Tensor, c: Tensor): { x: Tensor; c: Tensor | null } {
    const norm = (m: RMSNorm | null, t: Tensor) => (m ? m.forward(t) : t);
    const q = cat([norm(this.norm_q, this.heads_(this.to_q.forward(x))), norm(this.norm_added_q, this.heads_(this.add_q_proj.forward(c)))], 2);
    const k = cat([norm(this.norm_k, this.heads_(this.to_k.forward(x))), norm(this.norm_added_k, this.heads_(this.add_k_proj.forward(c)))], 2);
    const v = cat([this.heads_(this.to_v.forward(x)), this.heads_(this.add_v_proj.forward(c))], 2);
    const [n, lx] = x.shape as [number, number];
    const out = attention(q, k, v).transpose(1, 2).reshape([n, -1, this.heads * this.headDim]);
    const lc = c.shape[1]!;
    const [ox, oc] = out.split([lx, lc], 1) as [Tensor, Tensor];
    return { x: this.to_out.at(0).forward(ox), c: this.to_add_out ? this.to_add_out.forward(oc) : null };
  }
}

/** The image-only self-attention of SD3.5-medium's dual-attention blocks (attn2). */
export class SelfAttention extends Module {
  readonly norm_q: RMSNorm | null;
  readonly norm_k: RMSNorm | null;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: ModuleList<Linear>;
  constructor(dim: number, readonly heads: number, readonly headDim: number, qkNorm: boolean) {
    super();
    const inner = heads * headDim;
    this.norm_q = qkNorm ? this.child("norm_q", new RMSNorm(headDim)) : null;
    this.norm_k = qkNorm ? this.child("norm_k", new RMSNorm(headDim)) : null;
    this.to_q = this.child("to_q", new Linear(dim, inner));
    this.to_k = this.child("to_k", new Linear(dim, inner));
    this.to_v = this.child("to_v", new Linear(dim, inner));
    this.to_out = this.child("to_out", new ModuleList([new Linear(inner, dim)]));
  }
  forward(x: Tensor): Tensor {
    const [n, l] = x.shape as [number, number];
    const split = (t: Tensor) => t.reshape([n, l, this.heads, this.headDim]).transpose(1, 2);
    const norm = (m: RMSNorm | null, t: Tensor) => (m ? m.forward(t) : t);
    const q = norm(this.norm_q, split(this.to_q.forward(x)));
    const k = norm(this.norm_k, split(this.to_k.forward(x)));
    const out = attention(q, k, split(this.to_v.forward(x))).transpose(1, 2).reshape([n, l, this.heads * this.headDim]);
    return this.to_out.at(0).forward(out);
  }
}

/** JointTransformerBlock (with `useDualAttention`, SD3.5-medium's MMDiT-X block). */
export class JointTransformerBlock extends Module {
  readonly norm1: AdaLayerNormZero | AdaLayerNormZeroX;
  readonly norm1_context: AdaLayerNormZero | AdaLayerNormContinuous;
  readonly attn: JointAttention;
  readonly norm2: LayerNorm;
  readonly ff: GeluFeedForward;
  readonly norm2_context: LayerNorm | null;
  readonly ff_context: GeluFeedForward | null;
  readonly attn2: SelfAttention | null;
  constructor(dim: number, heads: number, headDim: number, readonly contextPreOnly: boolean, qkNorm: boolean, useDualAttention = false) {
    super();
    this.norm1 = this.child("norm1", useDualAttention ? new AdaLayerNormZeroX(dim) : new AdaLayerNormZero(dim));
    this.norm1_context = this.child("norm1_context", contextPreOnly ? new AdaLayerNormContinuous(dim, dim) : new AdaLayerNormZero(dim));
    this.attn = this.child("attn", new JointAttention(dim, heads, headDim, contextPreOnly, qkNorm));
    this.norm2 = this.child("norm2", new LayerNorm(dim, 1e-6, false));
    this.ff = this.child("ff", new GeluFeedForward(dim));
    this.norm2_context = contextPreOnly ? null : this.child("norm2_context", new LayerNorm(dim, 1e-6, false));
    this.ff_context = contextPreOnly ? null : this.child("ff_context", new GeluFeedForward(dim));
    this.attn2 = useDualAttention ? this.child("attn2", new SelfAttention(dim, heads, headDim, qkNorm)) : null;
  }
  forward(x: Tensor, c: Tensor, temb: Tensor): { x: Tensor; c: Tensor | null } {
    return tidy(() => {
      const nx = this.norm1.forward(x, temb);
      const ctx = this.norm1_context instanceof AdaLayerNormZero ? this.norm1_context.forward(c, temb) : null;
      const nc = ctx ? ctx.x : (this.norm1_context as AdaLayerNormContinuous).forward(c, temb);
      const a = this.attn.forward(nx.x, nc);
      let h = x.add(nx.gateMsa.unsqueeze(1).mul(a.x));
      if (this.attn2 && this.norm1 instanceof AdaLayerNormZeroX) {
        const dual = nx as ReturnType<AdaLayerNormZeroX["forward"]>;
        h = h.add(dual.gateMsa2.unsqueeze(1).mul(this.attn2.forward(dual.x2)));
      }
      h = h.add(nx.gateMlp.unsqueeze(1).mul(this.ff.forward(modulate(this.norm2.forward(h), nx.shiftMlp, nx.scaleMlp))));
      if (ctx === null || a.c === null) return { x: h, c: null };
      let hc = c.add(ctx.gateMsa.unsqueeze(1).mul(a.c));
      hc = hc.add(ctx.gateMlp.unsqueeze(1).mul(this.ff_context!.forward(modulate(this.norm2_context!.forward(hc), ctx.shiftMlp, ctx.scaleMlp))));
      return { x: h, c: hc };
    });
  }
}

export interface SD3ForwardInput {
  /** Latents [N, C, H, W]. */
  hiddenStates: Tensor;
  /** [N, L, joint_attention_dim]: CLIP-L ⊕ CLIP-G (padded) then T5 tokens. */
  encoderHiddenStates: Tensor;
  /** [N, pooled_projection_dim]: the two CLIP pooled projections concatenated. */
  pooledProjections: Tensor;
  /** [N] float timesteps σ·1000. */
  timestep: Tensor;
}

/** diffusers' SD3Transformer2DModel. */
export class SD3Transformer2DModel extends Module {
  readonly pos_embed: SD3PatchEmbed;
  readonly time_text_embed: CombinedTimestepTextEmbeddings;
  readonly context_embedder: Linear;
  readonly transformer_blocks: ModuleList<JointTransformerBlock>;
  readonly norm_out: AdaLayerNormContinuous;
  readonly proj_out: Linear;
  readonly innerDim: number;
  constructor(readonly config: SD3TransformerConfig) {
    super();
    const c = config;
    const dim = c.numAttentionHeads * c.attentionHeadDim;
    this.innerDim = dim;
    this.pos_embed = this.child("pos_embed", new SD3PatchEmbed(c));
    this.time_text_embed = this.child("time_text_embed", new CombinedTimestepTextEmbeddings(dim, c.pooledProjectionDim));
    this.context_embedder = this.child("context_embedder", new Linear(c.jointAttentionDim, c.captionProjectionDim));
    this.transformer_blocks = this.child("transformer_blocks", new ModuleList(Array.from({ length: c.numLayers },
      (_, i) => new JointTransformerBlock(dim, c.numAttentionHeads, c.attentionHeadDim, i === c.numLayers - 1, c.qkNorm !== null,
        c.dualAttentionLayers?.includes(i) ?? false))));
    this.norm_out = this.child("norm_out", new AdaLayerNormContinuous(dim, dim));
    this.proj_out = this.child("proj_out", new Linear(dim, c.patchSize * c.patchSize * c.outChannels));
  }

  forward(input: SD3ForwardInput): Tensor {
    const { hiddenStates, encoderHiddenStates, pooledProjections, timestep } = input;
    const c = this.config;
    if (hiddenStates.ndim !== 4 || hiddenStates.shape[1] !== c.inChannels) {
      throw new Error(`SD3Transformer2DModel: latents must be [N, ${c.inChannels}, H, W], got [${hiddenStates.shape.join(", ")}]`);
    }
    if (encoderHiddenStates.shape[2] !== c.jointAttentionDim) {
      throw new Error(`SD3Transformer2DModel: encoder_hidden_states width ${encoderHiddenStates.shape[2]} ≠ joint_attention_dim ${c.jointAttentionDim}`);
    }
    return tidy(() => {
      const [n, , hh, ww] = hiddenStates.shape as [number, number, number, number];
      const p = c.patchSize, h = Math.floor(hh / p), w = Math.floor(ww / p);
      let x = this.pos_embed.forward(hiddenStates);
      const t = timestep.ndim === 0 ? timestep.reshape([1]).expand([n]) : timestep;
      const temb = this.time_text_embed.forward(t, pooledProjections);
      let ctx: Tensor | null = this.context_embedder.forward(encoderHiddenStates);
      for (const block of this.transformer_blocks) {
        const out = block.forward(x, ctx!, temb);
        x = out.x;
        ctx = out.c;
      }
      x = this.proj_out.forward(this.norm_out.forward(x, temb));
      // unpatchify: [N, h·w, p·p·C] → [N, C, h·p, w·p] ("nhwpqc->nchpwq")
      return x.reshape([n, h, w, p, p, c.outChannels]).permute([0, 5, 1, 3, 2, 4]).reshape([n, c.outChannels, h * p, w * p]);
    });
  }
}
