// The UNet's building blocks, named and computed as diffusers' resnet.py, embeddings.py,
// attention.py, attention_processor.py and transformer_2d.py do, so a diffusers state dict
// loads one to one.
import type { Tensor } from "../../tensor/tensor.js";
import { arange, attention, cat, interpolateNearest } from "../../tensor/ops.js";
import { tidy } from "../../tensor/tensor.js";
import { Module, ModuleList } from "../../nn/module.js";
import { Conv2d, GroupNorm, LayerNorm, Linear } from "../../nn/layers.js";

/** A module that maps x → y like a Linear (a Linear, or a LoRA-wrapped Linear). */
export type LinearLike = Module & { forward(x: Tensor): Tensor };

/**
 * diffusers' get_timestep_embedding: [sin(t·f_i), cos(t·f_i)] with
 * f_i = exp(−ln(maxPeriod)·i / (half − freqShift)), i < half = dim/2; cos first when flipSinToCos.
 * Computed in float32 like the reference.
 */
export function timestepEmbedding(
  timesteps: Tensor, dim: number, opts: { flipSinToCos: boolean; freqShift: number; scale?: number; maxPeriod?: number },
): Tensor {
  const half = Math.floor(dim / 2);
  const maxPeriod = opts.maxPeriod ?? 10000;
  const exponent = arange(0, half, 1, { dtype: "f32", device: timesteps.device })
    .mul(-Math.log(maxPeriod))
    .div(half - opts.freqShift);
  const freqs = exponent.exp();
  let args = timesteps.to("f32").reshape([-1, 1]).mul(freqs.reshape([1, half]));
  if (opts.scale !== undefined && opts.scale !== 1) args = args.mul(opts.scale);
  let emb = opts.flipSinToCos ? cat([args.cos(), args.sin()], -1) : cat([args.sin(), args.cos()], -1);
  if (dim % 2 === 1) emb = emb.pad([0, 1]);
  return emb;
}

/** time_embedding: linear_1 → SiLU → linear_2. */
export class TimestepEmbedding extends Module {
  readonly linear_1: Linear;
  readonly linear_2: Linear;
  constructor(inChannels: number, timeEmbedDim: number) {
    super();
    this.linear_1 = this.child("linear_1", new Linear(inChannels, timeEmbedDim));
    this.linear_2 = this.child("linear_2", new Linear(timeEmbedDim, timeEmbedDim));
  }
  forward(x: Tensor): Tensor {
    return this.linear_2.forward(this.linear_1.forward(x).silu());
  }
}

/** ResnetBlock2D (time_embedding_norm "default", pre-norm, SiLU, no dropout). */
export class ResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly time_emb_proj: Linear;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut: Conv2d | null;
  constructor(
    inChannels: number, outChannels: number, tembChannels: number,
    readonly opts: { groups: number; eps: number; outputScaleFactor: number },
  ) {
    super();
    this.norm1 = this.child("norm1", new GroupNorm(opts.groups, inChannels, opts.eps));
    this.conv1 = this.child("conv1", new Conv2d(inChannels, outChannels, 3, { padding: 1 }));
    this.time_emb_proj = this.child("time_emb_proj", new Linear(tembChannels, outChannels));
    this.norm2 = this.child("norm2", new GroupNorm(opts.groups, outChannels, opts.eps));
    this.conv2 = this.child("conv2", new Conv2d(outChannels, outChannels, 3, { padding: 1 }));
    this.conv_shortcut = inChannels !== outChannels
      ? this.child("conv_shortcut", new Conv2d(inChannels, outChannels, 1))
      : null;
  }
  // Resnets and transformers run in their own tidy() scope: their intermediates are freed when
  // they return (as Python's refcounting frees them), so memory is reused while still in cache —
  // a UNet forward got ~20% faster. Safe under autograd: the graph keeps what backward needs.
  forward(x: Tensor, temb: Tensor): Tensor {
    return tidy(() => {
      let h = this.conv1.forward(this.norm1.forward(x).silu());
      const t = this.time_emb_proj.forward(temb.silu());
      h = h.add(t.reshape([t.shape[0]!, t.shape[1]!, 1, 1]));
      h = this.conv2.forward(this.norm2.forward(h).silu());
      const skip = this.conv_shortcut ? this.conv_shortcut.forward(x) : x;
      const out = skip.add(h);
      return this.opts.outputScaleFactor === 1 ? out : out.div(this.opts.outputScaleFactor);
    });
  }
}

/** Downsample2D with a strided 3×3 conv (padding 1). */
export class Downsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number) {
    super();
    this.conv = this.child("conv", new Conv2d(channels, channels, 3, { stride: 2, padding: 1 }));
  }
  forward(x: Tensor): Tensor {
    return this.conv.forward(x);
  }
}

/** Upsample2D: nearest ×2 (or to an explicit size), then a 3×3 conv. */
export class Upsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number) {
    super();
    this.conv = this.child("conv", new Conv2d(channels, channels, 3, { padding: 1 }));
  }
  forward(x: Tensor, size?: [number, number]): Tensor {
    const up = size ? interpolateNearest(x, size) : interpolateNearest(x, { scale: 2 });
    return this.conv.forward(up);
  }
}

/**
 * Attention (attention_processor.py) with the default processor: bias-free to_q/to_k/to_v,
 * to_out.0 with bias (to_out.1 is a parameter-free dropout, not registered), scale 1/√headDim.
 */
export class Attention extends Module {
  to_q: LinearLike;
  to_k: LinearLike;
  to_v: LinearLike;
  readonly to_out: ModuleList<LinearLike>;
  readonly headDim: number;
  /** Query tokens per attention call (null: all at once); see setAttentionSlice. */
  sliceSize: number | null = null;
  constructor(
    queryDim: number, crossAttentionDim: number | null, readonly heads: number, headDim: number,
    readonly upcast = false,
  ) {
    super();
    this.headDim = headDim;
    const inner = heads * headDim;
    const kvDim = crossAttentionDim ?? queryDim;
    this.to_q = this.child("to_q", new Linear(queryDim, inner, false));
    this.to_k = this.child("to_k", new Linear(kvDim, inner, false));
    this.to_v = this.child("to_v", new Linear(kvDim, inner, false));
    this.to_out = this.child("to_out", new ModuleList<LinearLike>([new Linear(inner, queryDim)]));
  }
  forward(x: Tensor, context?: Tensor | null): Tensor {
    const ctx = context ?? x;
    const [b, lq] = [x.shape[0]!, x.shape[1]!];
    const lk = ctx.shape[1]!;
    const split = (t: Tensor, l: number) => t.reshape([b, l, this.heads, this.headDim]).transpose(1, 2);
    let q = split(this.to_q.forward(x), lq);
    let k = split(this.to_k.forward(ctx), lk);
    let v = split(this.to_v.forward(ctx), lk);
    const dtype = q.dtype;
    if (this.upcast && dtype !== "f32" && dtype !== "f64") {
      q = q.to("f32");
      k = k.to("f32");
      v = v.to("f32");
    }
    const scale = 1 / Math.sqrt(this.headDim);
    let o: Tensor;
    if (this.sliceSize !== null && lq > this.sliceSize) {
      // Query slices: peak score memory heads·slice·lk instead of heads·lq·lk, same result.
      const parts: Tensor[] = [];
      for (let s = 0; s < lq; s += this.sliceSize) parts.push(attention(q.slice(2, s, Math.min(lq, s + this.sliceSize)), k, v, null, scale));
      o = cat(parts, 2);
    } else o = attention(q, k, v, null, scale);
    if (o.dtype !== dtype) o = o.to(dtype);
    o = o.transpose(1, 2).reshape([b, lq, this.heads * this.headDim]);
    return this.to_out.at(0).forward(o);
  }
}

/** A parameter-free slot (torch's Dropout at p = 0 in eval and training alike). */
export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

/** GEGLU: proj to 2×inner, split, value · gelu(gate) (exact erf GELU). */
export class GEGLU extends Module {
  readonly proj: Linear;
  constructor(dimIn: number, readonly dimOut: number) {
    super();
    this.proj = this.child("proj", new Linear(dimIn, dimOut * 2));
  }
  forward(x: Tensor): Tensor {
    const [value, gate] = this.proj.forward(x).chunk(2, -1) as [Tensor, Tensor];
    return value.mul(gate.gelu());
  }
}

/** FeedForward: net.0 = GEGLU(dim → 4·dim), net.1 = dropout (no params), net.2 = Linear(4·dim → dim). */
export class FeedForward extends Module {
  readonly net: ModuleList<LinearLike>;
  constructor(dim: number, mult = 4) {
    super();
    const inner = dim * mult;
    this.net = this.child("net", new ModuleList<LinearLike>());
    this.net.push(new GEGLU(dim, inner));
    this.net.push(new Identity()); // the Dropout slot, so the output layer is net.2
    this.net.push(new Linear(inner, dim));
  }
  forward(x: Tensor): Tensor {
    return this.net.at(2).forward(this.net.at(0).forward(x));
  }
}

/** BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm with a residual. */
export class BasicTransformerBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly norm2: LayerNorm;
  readonly attn2: Attention;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;
  constructor(
    dim: number, heads: number, headDim: number, crossAttentionDim: number,
    readonly onlyCrossAttention: boolean, upcast: boolean,
  ) {
    super();
    this.norm1 = this.child("norm1", new LayerNorm(dim, 1e-5));
    this.attn1 = this.child("attn1", new Attention(dim, onlyCrossAttention ? crossAttentionDim : null, heads, headDim, upcast));
    this.norm2 = this.child("norm2", new LayerNorm(dim, 1e-5));
    this.attn2 = this.child("attn2", new Attention(dim, crossAttentionDim, heads, headDim, upcast));
    this.norm3 = this.child("norm3", new LayerNorm(dim, 1e-5));
    this.ff = this.child("ff", new FeedForward(dim));
  }
  forward(x: Tensor, context: Tensor): Tensor {
    let h = this.attn1.forward(this.norm1.forward(x), this.onlyCrossAttention ? context : null).add(x);
    h = this.attn2.forward(this.norm2.forward(h), context).add(h);
    return this.ff.forward(this.norm3.forward(h)).add(h);
  }
}

/**
 * Transformer2DModel (continuous input): GroupNorm(eps 1e-6) → proj_in (1×1 conv, or Linear with
 * useLinearProjection) → transformer blocks over the H·W tokens → proj_out → + input.
 */
export class Transformer2DModel extends Module {
  readonly norm: GroupNorm;
  readonly proj_in: Conv2d | LinearLike;
  readonly transformer_blocks: ModuleList<BasicTransformerBlock>;
  readonly proj_out: Conv2d | LinearLike;
  readonly inner: number;
  constructor(
    heads: number, headDim: number, inChannels: number,
    readonly opts: { numLayers: number; crossAttentionDim: number; groups: number; linearProjection: boolean; onlyCrossAttention: boolean; upcast: boolean },
  ) {
    super();
    const inner = heads * headDim;
    this.inner = inner;
    this.norm = this.child("norm", new GroupNorm(opts.groups, inChannels, 1e-6));
    this.proj_in = this.child("proj_in", opts.linearProjection ? new Linear(inChannels, inner) : new Conv2d(inChannels, inner, 1));
    this.transformer_blocks = this.child("transformer_blocks", new ModuleList<BasicTransformerBlock>());
    for (let i = 0; i < opts.numLayers; i++) {
      this.transformer_blocks.push(new BasicTransformerBlock(inner, heads, headDim, opts.crossAttentionDim, opts.onlyCrossAttention, opts.upcast));
    }
    this.proj_out = this.child("proj_out", opts.linearProjection ? new Linear(inner, inChannels) : new Conv2d(inner, inChannels, 1));
  }
  forward(x: Tensor, context: Tensor): Tensor {
    return tidy(() => {
      const [b, , hgt, wid] = x.shape as [number, number, number, number];
      const toTokens = (t: Tensor) => t.permute([0, 2, 3, 1]).reshape([b, hgt * wid, t.shape[1]!]);
      const toImage = (t: Tensor) => t.reshape([b, hgt, wid, t.shape[2]!]).permute([0, 3, 1, 2]);
      let h = this.norm.forward(x);
      h = this.opts.linearProjection ? this.proj_in.forward(toTokens(h)) : toTokens(this.proj_in.forward(h));
      for (const block of this.transformer_blocks) h = block.forward(h, context);
      h = this.opts.linearProjection ? toImage(this.proj_out.forward(h)) : this.proj_out.forward(toImage(h).contiguous());
      return h.add(x);
    });
  }
}

/**
 * Computes attention over at most `queries` query tokens at a time in every Attention of the
 * model (null: all at once). Same output, less peak memory: SD1.5 at 512² has 4096 tokens, so
 * a full score matrix is 8 heads × 4096² floats = 512 MB per image.
 */
export function setAttentionSlice(model: Module, queries: number | null): void {
  if (queries !== null && (!Number.isInteger(queries) || queries <= 0)) {
    throw new Error(`attention slice must be a positive integer or null, got ${queries}`);
  }
  for (const [, m] of model.namedModules()) if (m instanceof Attention) m.sliceSize = queries;
}
