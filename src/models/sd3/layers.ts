// Building blocks shared by the MMDiT (SD3) and Flux transformers, named and computed as
// diffusers' normalization.py, embeddings.py and attention.py (v0.30) so state dicts load one to one.
import type { Tensor } from "../../tensor/tensor.js";
import { full } from "../../tensor/ops.js";
import { tidy } from "../../tensor/tensor.js";
import { Module, ModuleList } from "../../nn/module.js";
import { LayerNorm, Linear } from "../../nn/layers.js";
import { Identity, TimestepEmbedding, timestepEmbedding, type LinearLike } from "../unet/layers.js";

/** x·(1 + scale) + shift with [N, D] modulation broadcast over the tokens of x [N, L, D]. */
export function modulate(x: Tensor, shift: Tensor, scale: Tensor): Tensor {
  return x.mul(scale.unsqueeze(1).add(1)).add(shift.unsqueeze(1));
}

/** diffusers' RMSNorm (qk_norm "rms_norm"): x / √(mean(x²) + ε) · weight over the last dim, in float32. */
export class RMSNorm extends Module {
  readonly weight: Tensor;
  constructor(readonly dim: number, readonly eps = 1e-6) {
    super();
    this.weight = this.param("weight", full([dim], 1));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const xf = x.dtype === "f32" ? x : x.to("f32");
      const y = xf.mul(xf.square().mean(-1, true).add(this.eps).rsqrt());
      return (y.dtype === this.weight.dtype ? y : y.to(this.weight.dtype)).mul(this.weight);
    });
  }
}

/** AdaLayerNormZero: linear(silu(emb)) → shift, scale, gate (attention) and shift, scale, gate (MLP). */
export class AdaLayerNormZero extends Module {
  readonly linear: Linear;
  readonly norm: LayerNorm;
  constructor(dim: number) {
    super();
    this.linear = this.child("linear", new Linear(dim, 6 * dim));
    this.norm = this.child("norm", new LayerNorm(dim, 1e-6, false));
  }
  forward(x: Tensor, emb: Tensor): { x: Tensor; gateMsa: Tensor; shiftMlp: Tensor; scaleMlp: Tensor; gateMlp: Tensor } {
    const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = this.linear.forward(emb.silu()).chunk(6, 1) as Tensor[];
    return { x: modulate(this.norm.forward(x), shiftMsa!, scaleMsa!), gateMsa: gateMsa!, shiftMlp: shiftMlp!, scaleMlp: scaleMlp!, gateMlp: gateMlp! };
  }
}

/**
 * SD35AdaLayerNormZeroX (SD3.5-medium's dual-attention blocks): 9 chunks, the six of
 * AdaLayerNormZero then shift, scale, gate of the second (image-only) attention, whose input is
 * the same normalised x modulated by its own shift and scale.
 */
export class AdaLayerNormZeroX extends Module {
  readonly linear: Linear;
  readonly norm: LayerNorm;
  constructor(dim: number) {
    super();
    this.linear = this.child("linear", new Linear(dim, 9 * dim));
    this.norm = this.child("norm", new LayerNorm(dim, 1e-6, false));
  }
  forward(x: Tensor, emb: Tensor): { x: Tensor; gateMsa: Tensor; shiftMlp: Tensor; scaleMlp: Tensor; gateMlp: Tensor; x2: Tensor; gateMsa2: Tensor } {
    const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp, shiftMsa2, scaleMsa2, gateMsa2] = this.linear.forward(emb.silu()).chunk(9, 1) as Tensor[];
    const normed = this.norm.forward(x);
    return {
      x: modulate(normed, shiftMsa!, scaleMsa!), gateMsa: gateMsa!, shiftMlp: shiftMlp!, scaleMlp: scaleMlp!, gateMlp: gateMlp!,
      x2: modulate(normed, shiftMsa2!, scaleMsa2!), gateMsa2: gateMsa2!,
    };
  }
}

/** AdaLayerNormZeroSingle (Flux's single blocks): shift, scale, gate for one branch. */
export class AdaLayerNormZeroSingle extends Module {
  readonly linear: Linear;
  readonly norm: LayerNorm;
  constructor(dim: number) {
    super();
    this.linear = this.child("linear", new Linear(dim, 3 * dim));
    this.norm = this.child("norm", new LayerNorm(dim, 1e-6, false));
  }
  forward(x: Tensor, emb: Tensor): { x: Tensor; gate: Tensor } {
    const [shift, scale, gate] = this.linear.forward(emb.silu()).chunk(3, 1) as Tensor[];
    return { x: modulate(this.norm.forward(x), shift!, scale!), gate: gate! };
  }
}

/** AdaLayerNormContinuous (norm_out, SD3's last context norm): scale THEN shift from linear(silu(c)). */
export class AdaLayerNormContinuous extends Module {
  readonly linear: Linear;
  readonly norm: LayerNorm;
  constructor(dim: number, conditioningDim: number) {
    super();
    this.linear = this.child("linear", new Linear(conditioningDim, 2 * dim));
    this.norm = this.child("norm", new LayerNorm(dim, 1e-6, false));
  }
  forward(x: Tensor, cond: Tensor): Tensor {
    const [scale, shift] = this.linear.forward(cond.silu()).chunk(2, 1) as Tensor[];
    return modulate(this.norm.forward(x), shift!, scale!);
  }
}

/** GELU(approximate="tanh") with its input projection: net.0 of FeedForward("gelu-approximate"). */
export class GeluTanhProjection extends Module {
  readonly proj: Linear;
  constructor(dimIn: number, dimOut: number) {
    super();
    this.proj = this.child("proj", new Linear(dimIn, dimOut));
  }
  forward(x: Tensor): Tensor {
    return this.proj.forward(x).geluTanh();
  }
}

/** FeedForward(activation_fn="gelu-approximate"): net.0.proj → tanh-GELU → net.2 (mult 4). */
export class GeluFeedForward extends Module {
  readonly net: ModuleList<LinearLike>;
  constructor(dim: number, mult = 4) {
    super();
    this.net = this.child("net", new ModuleList<LinearLike>());
    this.net.push(new GeluTanhProjection(dim, dim * mult));
    this.net.push(new Identity()); // the Dropout slot, so the output layer is net.2
    this.net.push(new Linear(dim * mult, dim));
  }
  forward(x: Tensor): Tensor {
    return this.net.at(2).forward(this.net.at(0).forward(x));
  }
}

/** PixArtAlphaTextProjection (act "silu"): linear_1 → SiLU → linear_2 on the pooled text embedding. */
export class PooledTextProjection extends Module {
  readonly linear_1: Linear;
  readonly linear_2: Linear;
  constructor(inFeatures: number, hidden: number) {
    super();
    this.linear_1 = this.child("linear_1", new Linear(inFeatures, hidden));
    this.linear_2 = this.child("linear_2", new Linear(hidden, hidden));
  }
  forward(x: Tensor): Tensor {
    return this.linear_2.forward(this.linear_1.forward(x).silu());
  }
}

/** diffusers' Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0) projection. */
export function timeProjection(t: Tensor): Tensor {
  return timestepEmbedding(t, 256, { flipSinToCos: true, freqShift: 0 });
}

/**
 * CombinedTimestepTextProjEmbeddings (SD3, Flux-schnell) and, with `withGuidance`,
 * CombinedTimestepGuidanceTextProjEmbeddings (Flux-dev): temb = time + [guidance] + pooled text.
 */
export class CombinedTimestepTextEmbeddings extends Module {
  readonly timestep_embedder: TimestepEmbedding;
  readonly guidance_embedder: TimestepEmbedding | null;
  readonly text_embedder: PooledTextProjection;
  constructor(dim: number, pooledDim: number, withGuidance = false) {
    super();
    this.timestep_embedder = this.child("timestep_embedder", new TimestepEmbedding(256, dim));
    this.guidance_embedder = withGuidance ? this.child("guidance_embedder", new TimestepEmbedding(256, dim)) : null;
    this.text_embedder = this.child("text_embedder", new PooledTextProjection(pooledDim, dim));
  }
  forward(timestep: Tensor, pooled: Tensor, guidance?: Tensor | null): Tensor {
    const dtype = pooled.dtype;
    const cast = (t: Tensor) => (t.dtype === dtype ? t : t.to(dtype));
    let temb = this.timestep_embedder.forward(cast(timeProjection(timestep)));
    if (this.guidance_embedder) {
      if (!guidance) throw new Error("this transformer has a guidance embedding (guidance_embeds true): pass a guidance value");
      temb = temb.add(this.guidance_embedder.forward(cast(timeProjection(guidance))));
    }
    return temb.add(this.text_embedder.forward(pooled));
  }
}
