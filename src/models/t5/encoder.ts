// transformers' T5EncoderModel (the text_encoder_3 of SD3, the text_encoder_2 of Flux) with its
// parameter names, so `model.safetensors` loads one to one:
//
//   ids [N, L] → shared embedding → L pre-norm blocks
//     (x + o(attn(q, k, v of rms(x)) + relative position bias), then x + ff(rms(x))) → final_layer_norm
//
// T5's particulars: the RMS norm has no mean subtraction and no bias; attention is NOT scaled by
// 1/√d; only block 0 owns `relative_attention_bias` (bidirectional buckets), and the bias it
// computes (plus the padding mask) is added in every block; the feed-forward is relu
// (`DenseReluDense.wi/wo`) or gated (`wi_0`, `wi_1`: act(wi_0 x) · wi_1 x) per feed_forward_proj.
import { z } from "zod";
import { Module, ModuleList } from "../../nn/module.js";
import { Embedding, Linear } from "../../nn/layers.js";
import { arange, attention, full, tidy, type Tensor } from "../../tensor/index.js";
import { SafetensorsFile } from "../../io/safetensors.js";
import { parseConfig } from "../../util/config-json.js";
import { loadWeightsInto } from "../pipeline.js";

export type T5Activation = "relu" | "gelu_new" | "gelu";

/** transformers' T5Config, the fields the encoder uses (camelCase; snake_case in config.json). */
export interface T5EncoderConfig {
  vocabSize: number;
  dModel: number;
  dKv: number;
  dFf: number;
  numLayers: number;
  numHeads: number;
  relativeAttentionNumBuckets: number;
  relativeAttentionMaxDistance: number;
  layerNormEpsilon: number;
  /** dense_act_fn: "relu" (feed_forward_proj "relu") or "gelu_new" ("gated-gelu"). */
  activation: T5Activation;
  isGated: boolean;
}

const t5Json = z.looseObject({
  vocab_size: z.number().int().positive().default(32128),
  d_model: z.number().int().positive().default(512),
  d_kv: z.number().int().positive().default(64),
  d_ff: z.number().int().positive().default(2048),
  num_layers: z.number().int().positive().default(6),
  num_heads: z.number().int().positive().default(8),
  relative_attention_num_buckets: z.number().int().positive().default(32),
  relative_attention_max_distance: z.number().int().positive().default(128),
  layer_norm_epsilon: z.number().positive().default(1e-6),
  feed_forward_proj: z.string().default("relu"),
});

/** Reads a T5 config.json object (missing fields take transformers' T5Config defaults). */
export function t5EncoderConfigFromJson(json: unknown, source = "text_encoder/config.json"): T5EncoderConfig {
  const j = parseConfig(t5Json, json, source, "T5Config");
  // transformers: "gated-gelu" means gated gelu_new; otherwise "[gated-]act"
  const parts = j.feed_forward_proj.split("-");
  const isGated = parts.length === 2 && parts[0] === "gated";
  const actName = j.feed_forward_proj === "gated-gelu" ? "gelu_new" : parts[parts.length - 1]!;
  if ((parts.length === 2 && parts[0] !== "gated") || parts.length > 2 || !["relu", "gelu_new", "gelu"].includes(actName)) {
    throw new Error(`${source}: feed_forward_proj "${j.feed_forward_proj}" is not supported; use "relu", "gated-gelu", "gelu_new" or "gated-gelu_new"`);
  }
  return {
    vocabSize: j.vocab_size,
    dModel: j.d_model,
    dKv: j.d_kv,
    dFf: j.d_ff,
    numLayers: j.num_layers,
    numHeads: j.num_heads,
    relativeAttentionNumBuckets: j.relative_attention_num_buckets,
    relativeAttentionMaxDistance: j.relative_attention_max_distance,
    layerNormEpsilon: j.layer_norm_epsilon,
    activation: actName as T5Activation,
    isGated,
  };
}

/** T5LayerNorm: x / √(mean(x²) + ε) · weight, computed in float32. */
export class T5LayerNorm extends Module {
  readonly weight: Tensor;
  constructor(readonly dim: number, readonly eps: number) {
    super();
    this.weight = this.param("weight", full([dim], 1));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const xf = x.dtype === "f32" ? x : x.to("f32");
      const normed = xf.mul(xf.square().mean(-1, true).add(this.eps).rsqrt());
      return this.weight.mul(this.weight.dtype === "f32" ? normed : normed.to(this.weight.dtype));
    });
  }
}

/**
 * T5's bidirectional relative-position bucket of (key − query) for every query/key pair, [L, L]
 * int64: half the buckets for keys after the query; exact buckets below numBuckets/4, then
 * log-spaced up to maxDistance. The log part runs in float32 libtorch ops, as transformers does,
 * so the truncation to an integer bucket lands where it lands there.
 */
export function relativePositionBuckets(length: number, numBuckets: number, maxDistance: number, device?: string): Tensor {
  return tidy(() => {
    const pos = arange(0, length, 1, { dtype: "i64", device });
    const rel = pos.reshape([1, length]).sub(pos.reshape([length, 1])); // memory − query
    const half = Math.floor(numBuckets / 2);
    const maxExact = Math.floor(half / 2);
    const side = rel.gt(0).to("i64").mul(half);
    const dist = rel.abs();
    const large = dist.to("f32").div(maxExact).log().div(Math.log(maxDistance / maxExact)).mul(half - maxExact)
      .to("i64").add(maxExact).minimum(half - 1);
    const bucket = dist.lt(maxExact).to("i64");
    // where(dist < maxExact, dist, large) without a bool select: b·dist + (1 − b)·large
    return side.add(bucket.mul(dist)).add(bucket.rsub(1).mul(large)).to("i64");
  });
}

class T5Attention extends Module {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly o: Linear;
  readonly relative_attention_bias: Embedding | null;
  constructor(readonly config: T5EncoderConfig, hasRelativeBias: boolean) {
    super();
    const inner = config.numHeads * config.dKv;
    this.q = this.child("q", new Linear(config.dModel, inner, false));
    this.k = this.child("k", new Linear(config.dModel, inner, false));
    this.v = this.child("v", new Linear(config.dModel, inner, false));
    this.o = this.child("o", new Linear(inner, config.dModel, false));
    this.relative_attention_bias = hasRelativeBias
      ? this.child("relative_attention_bias", new Embedding(config.relativeAttentionNumBuckets, config.numHeads))
      : null;
  }
  /** [1, H, L, L]: the learned bias per head for every query/key pair. */
  positionBias(length: number, device: string): Tensor {
    if (!this.relative_attention_bias) throw new Error("T5Attention: only the first block has a relative_attention_bias");
    const c = this.config;
    const buckets = relativePositionBuckets(length, c.relativeAttentionNumBuckets, c.relativeAttentionMaxDistance, device);
    return this.relative_attention_bias.forward(buckets).permute([2, 0, 1]).unsqueeze(0);
  }
  forward(x: Tensor, bias: Tensor): Tensor {
    const [n, l] = x.shape as [number, number, number];
    const h = this.config.numHeads, d = this.config.dKv;
    const split = (t: Tensor) => t.reshape([n, l, h, d]).transpose(1, 2);
    const out = attention(split(this.q.forward(x)), split(this.k.forward(x)), split(this.v.forward(x)), bias, 1);
    return this.o.forward(out.transpose(1, 2).reshape([n, l, h * d]));
  }
}

class T5LayerSelfAttention extends Module {
  readonly SelfAttention: T5Attention;
  readonly layer_norm: T5LayerNorm;
  constructor(config: T5EncoderConfig, hasRelativeBias: boolean) {
    super();
    this.SelfAttention = this.child("SelfAttention", new T5Attention(config, hasRelativeBias));
    this.layer_norm = this.child("layer_norm", new T5LayerNorm(config.dModel, config.layerNormEpsilon));
  }
  forward(x: Tensor, bias: Tensor): Tensor {
    return x.add(this.SelfAttention.forward(this.layer_norm.forward(x), bias));
  }
}

function activate(x: Tensor, act: T5Activation): Tensor {
  return act === "relu" ? x.relu() : act === "gelu_new" ? x.geluTanh() : x.gelu();
}

class T5DenseActDense extends Module {
  readonly wi: Linear;
  readonly wo: Linear;
  constructor(readonly config: T5EncoderConfig) {
    super();
    this.wi = this.child("wi", new Linear(config.dModel, config.dFf, false));
    this.wo = this.child("wo", new Linear(config.dFf, config.dModel, false));
  }
  forward(x: Tensor): Tensor {
    return this.wo.forward(activate(this.wi.forward(x), this.config.activation));
  }
}

class T5DenseGatedActDense extends Module {
  readonly wi_0: Linear;
  readonly wi_1: Linear;
  readonly wo: Linear;
  constructor(readonly config: T5EncoderConfig) {
    super();
    this.wi_0 = this.child("wi_0", new Linear(config.dModel, config.dFf, false));
    this.wi_1 = this.child("wi_1", new Linear(config.dModel, config.dFf, false));
    this.wo = this.child("wo", new Linear(config.dFf, config.dModel, false));
  }
  forward(x: Tensor): Tensor {
    return this.wo.forward(activate(this.wi_0.forward(x), this.config.activation).mul(this.wi_1.forward(x)));
  }
}

class T5LayerFF extends Module {
  readonly DenseReluDense: T5DenseActDense | T5DenseGatedActDense;
  readonly layer_norm: T5LayerNorm;
  constructor(config: T5EncoderConfig) {
    super();
    this.DenseReluDense = this.child("DenseReluDense", config.isGated ? new T5DenseGatedActDense(config) : new T5DenseActDense(config));
    this.layer_norm = this.child("layer_norm", new T5LayerNorm(config.dModel, config.layerNormEpsilon));
  }
  forward(x: Tensor): Tensor {
    return x.add(this.DenseReluDense.forward(this.layer_norm.forward(x)));
  }
}

class T5Block extends Module {
  readonly layer: ModuleList;
  readonly attn: T5LayerSelfAttention;
  readonly ff: T5LayerFF;
  constructor(config: T5EncoderConfig, hasRelativeBias: boolean) {
    super();
    this.attn = new T5LayerSelfAttention(config, hasRelativeBias);
    this.ff = new T5LayerFF(config);
    this.layer = this.child("layer", new ModuleList<Module>([this.attn, this.ff]));
  }
  forward(x: Tensor, bias: Tensor): Tensor {
    return tidy(() => this.ff.forward(this.attn.forward(x, bias)));
  }
}

class T5Stack extends Module {
  readonly block: ModuleList<T5Block>;
  readonly final_layer_norm: T5LayerNorm;
  constructor(config: T5EncoderConfig) {
    super();
    this.block = this.child("block", new ModuleList(Array.from({ length: config.numLayers }, (_, i) => new T5Block(config, i === 0))));
    this.final_layer_norm = this.child("final_layer_norm", new T5LayerNorm(config.dModel, config.layerNormEpsilon));
  }
}

/** float32's most negative finite value: transformers' additive mask for padded keys. */
const F32_MIN = -3.4028234663852886e38;

/** transformers' T5EncoderModel (`shared`, `encoder.block.*`, `encoder.final_layer_norm`). */
export class T5EncoderModel extends Module {
  readonly shared: Embedding;
  readonly encoder: T5Stack;
  constructor(readonly config: T5EncoderConfig) {
    super();
    this.shared = this.child("shared", new Embedding(config.vocabSize, config.dModel));
    this.encoder = this.child("encoder", new T5Stack(config));
  }

  /**
   * `ids` [N, L] → last_hidden_state [N, L, d_model]. `attentionMask` [N, L] (1 = token, 0 = pad)
   * is optional: SD3 and Flux call T5 without one (padding tokens are attended to).
   */
  forward(ids: Tensor, attentionMask?: Tensor): Tensor {
    if (ids.ndim !== 2) throw new Error(`T5EncoderModel.forward: ids must be [N, L], got [${ids.shape.join(", ")}]`);
    return tidy(() => {
      const longIds = ids.dtype === "i64" ? ids : ids.to("i64");
      let h = this.shared.forward(longIds);
      const l = ids.shape[1]!;
      let bias = this.encoder.block.at(0).attn.SelfAttention.positionBias(l, h.device);
      if (attentionMask) {
        const m = attentionMask.to("f32").toDevice(h.device).rsub(1).mul(F32_MIN).reshape([ids.shape[0]!, 1, 1, l]);
        bias = bias.add(m);
      }
      if (bias.dtype !== h.dtype) bias = bias.to(h.dtype);
      for (const block of this.encoder.block) h = block.forward(h, bias);
      return this.encoder.final_layer_norm.forward(h);
    });
  }

  /**
   * Loads a transformers T5 `model.safetensors` (or shards). `encoder.embed_tokens.weight` is tied
   * to `shared.weight`: dropped when both are stored, read as `shared.weight` when it is the only copy.
   */
  loadWeights(files: string[]): void {
    const keys = new Set<string>();
    for (const f of files) {
      const file = SafetensorsFile.open(f);
      try { for (const k of file.keys()) keys.add(k); } finally { file.close(); }
    }
    const hasShared = keys.has("shared.weight");
    loadWeightsInto(this, files, {
      rename: (name) => {
        if (name === "encoder.embed_tokens.weight") return hasShared ? null : "shared.weight";
        if (name === "lm_head.weight" || name.startsWith("decoder.")) return null; // a full T5's decoder half
        return name;
      },
    });
  }
}
