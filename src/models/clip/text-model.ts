// The CLIP text transformer as transformers' `CLIPTextModel` (and `CLIPTextModelWithProjection`):
// the same parameter names, so a Stable Diffusion `text_encoder/model.safetensors` loads one to one.
//
//   ids [N, L] → token + position embeddings → L pre-norm layers
//     (x + attn(ln1(x)) with a causal mask, then x + mlp(ln2(x))) → final_layer_norm
//   pooled = the hidden state at the end-of-text token of each row.
import { z } from "zod";
import { Module, ModuleList } from "../../nn/module.js";
import { Embedding, LayerNorm, Linear } from "../../nn/layers.js";
import { normal } from "../../nn/init.js";
import { arange, attention, full, noGrad, triu, type Tensor } from "../../tensor/index.js";

export type ClipHiddenAct = "quick_gelu" | "gelu";

/** transformers' CLIPTextConfig (camelCase here; snake_case in text_encoder/config.json). */
export interface ClipTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  hiddenAct: ClipHiddenAct;
  layerNormEps: number;
  /** Width of the optional text projection (CLIPTextModelWithProjection). */
  projectionDim: number;
  /**
   * The end-of-text id. transformers' rule: with eos_token_id 2 (the value in the original
   * OpenAI/SD1.x configs) the pooled position is the argmax of the ids, which is the EOS token
   * 49407 (the largest id in the vocabulary); otherwise the first position holding eos_token_id.
   */
  eosTokenId: number;
  bosTokenId: number;
  padTokenId: number;
  initializerRange: number;
  initializerFactor: number;
}

/** Defaults as transformers' CLIPTextConfig() (ViT-B/32 text tower, ids of the CLIP vocabulary). */
export const DEFAULT_CLIP_TEXT_CONFIG: ClipTextConfig = {
  vocabSize: 49408,
  hiddenSize: 512,
  intermediateSize: 2048,
  numHiddenLayers: 12,
  numAttentionHeads: 8,
  maxPositionEmbeddings: 77,
  hiddenAct: "quick_gelu",
  layerNormEps: 1e-5,
  projectionDim: 512,
  eosTokenId: 49407,
  bosTokenId: 49406,
  padTokenId: 1,
  initializerRange: 0.02,
  initializerFactor: 1.0,
};

/** A text encoder small enough for CPU tests and the small default model (full CLIP vocabulary). */
export const TINY_CLIP_TEXT_CONFIG: ClipTextConfig = {
  ...DEFAULT_CLIP_TEXT_CONFIG,
  hiddenSize: 64,
  intermediateSize: 128,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  projectionDim: 64,
};

const clipTextJson = z.looseObject({
  vocab_size: z.number().int().positive().optional(),
  hidden_size: z.number().int().positive().optional(),
  intermediate_size: z.number().int().positive().optional(),
  num_hidden_layers: z.number().int().positive().optional(),
  num_attention_heads: z.number().int().positive().optional(),
  max_position_embeddings: z.number().int().positive().optional(),
  hidden_act: z.enum(["quick_gelu", "gelu"]).optional(),
  layer_norm_eps: z.number().positive().optional(),
  projection_dim: z.number().int().positive().optional(),
  eos_token_id: z.number().int().optional(),
  bos_token_id: z.number().int().optional(),
  pad_token_id: z.number().int().optional(),
  initializer_range: z.number().optional(),
  initializer_factor: z.number().optional(),
});

/** The config.json keys the text encoder reads (others are reported by src/models/config-warnings.ts). */
export const CLIP_TEXT_CONFIG_KEYS: readonly string[] = Object.keys(clipTextJson.shape);

/** Reads a text_encoder/config.json object (missing fields take transformers' defaults). */
export function clipTextConfigFromJson(json: unknown, source = "text_encoder/config.json"): ClipTextConfig {
  const parsed = clipTextJson.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new Error(`${source}: not a valid CLIPTextConfig (${issues})`);
  }
  const j = parsed.data;
  const d = DEFAULT_CLIP_TEXT_CONFIG;
  const config: ClipTextConfig = {
    vocabSize: j.vocab_size ?? d.vocabSize,
    hiddenSize: j.hidden_size ?? d.hiddenSize,
    intermediateSize: j.intermediate_size ?? d.intermediateSize,
    numHiddenLayers: j.num_hidden_layers ?? d.numHiddenLayers,
    numAttentionHeads: j.num_attention_heads ?? d.numAttentionHeads,
    maxPositionEmbeddings: j.max_position_embeddings ?? d.maxPositionEmbeddings,
    hiddenAct: j.hidden_act ?? d.hiddenAct,
    layerNormEps: j.layer_norm_eps ?? d.layerNormEps,
    projectionDim: j.projection_dim ?? d.projectionDim,
    eosTokenId: j.eos_token_id ?? d.eosTokenId,
    bosTokenId: j.bos_token_id ?? d.bosTokenId,
    padTokenId: j.pad_token_id ?? d.padTokenId,
    initializerRange: j.initializer_range ?? d.initializerRange,
    initializerFactor: j.initializer_factor ?? d.initializerFactor,
  };
  validateClipTextConfig(config, source);
  return config;
}

/** The config as transformers writes text_encoder/config.json. */
export function clipTextConfigToJson(config: ClipTextConfig, withProjection = false): Record<string, unknown> {
  return {
    architectures: [withProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel"],
    model_type: "clip_text_model",
    attention_dropout: 0.0,
    dropout: 0.0,
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numHiddenLayers,
    num_attention_heads: config.numAttentionHeads,
    max_position_embeddings: config.maxPositionEmbeddings,
    hidden_act: config.hiddenAct,
    layer_norm_eps: config.layerNormEps,
    projection_dim: config.projectionDim,
    eos_token_id: config.eosTokenId,
    bos_token_id: config.bosTokenId,
    pad_token_id: config.padTokenId,
    initializer_range: config.initializerRange,
    initializer_factor: config.initializerFactor,
    torch_dtype: "float32",
  };
}

export function validateClipTextConfig(config: ClipTextConfig, source = "ClipTextConfig"): void {
  if (config.hiddenSize % config.numAttentionHeads !== 0) {
    throw new Error(`${source}: hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ${config.numAttentionHeads}`);
  }
}

/** Re-draws a parameter in place from N(0, std²) (transformers' CLIP initialisation). */
function initNormal(t: Tensor, std: number): void {
  noGrad(() => {
    const v = normal(t.shape, 0, std);
    t.copy_(v);
    v.dispose();
  });
}
function initZero(t: Tensor | null): void {
  if (t !== null) noGrad(() => t.fill_(0));
}

class ClipTextEmbeddings extends Module {
  readonly token_embedding: Embedding;
  readonly position_embedding: Embedding;
  constructor(config: ClipTextConfig) {
    super();
    this.token_embedding = this.child("token_embedding", new Embedding(config.vocabSize, config.hiddenSize));
    this.position_embedding = this.child("position_embedding", new Embedding(config.maxPositionEmbeddings, config.hiddenSize));
    const std = config.initializerFactor * 0.02;
    initNormal(this.token_embedding.weight, std);
    initNormal(this.position_embedding.weight, std);
  }
  forward(ids: Tensor): Tensor {
    const length = ids.shape[1]!;
    const positions = arange(0, length, 1, { dtype: "i64", device: ids.device });
    return this.token_embedding.forward(ids).add(this.position_embedding.forward(positions));
  }
}

class ClipAttention extends Module {
  // transformers registers k, v, q, out in this order.
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly q_proj: Linear;
  readonly out_proj: Linear;
  readonly heads: number;
  readonly headDim: number;
  constructor(config: ClipTextConfig) {
    super();
    const d = config.hiddenSize;
    this.heads = config.numAttentionHeads;
    this.headDim = d / this.heads;
    this.k_proj = this.child("k_proj", new Linear(d, d));
    this.v_proj = this.child("v_proj", new Linear(d, d));
    this.q_proj = this.child("q_proj", new Linear(d, d));
    this.out_proj = this.child("out_proj", new Linear(d, d));
    const f = config.initializerFactor;
    const inStd = d ** -0.5 * (2 * config.numHiddenLayers) ** -0.5 * f;
    for (const l of [this.q_proj, this.k_proj, this.v_proj]) { initNormal(l.weight, inStd); initZero(l.bias); }
    initNormal(this.out_proj.weight, d ** -0.5 * f);
    initZero(this.out_proj.bias);
  }
  forward(x: Tensor, mask: Tensor | null): Tensor {
    const [n, l, d] = x.shape as [number, number, number];
    const split = (t: Tensor) => t.reshape([n, l, this.heads, this.headDim]).transpose(1, 2);
    const q = split(this.q_proj.forward(x));
    const k = split(this.k_proj.forward(x));
    const v = split(this.v_proj.forward(x));
    const out = attention(q, k, v, mask, this.headDim ** -0.5);
    return this.out_proj.forward(out.transpose(1, 2).reshape([n, l, d]));
  }
}

class ClipMlp extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(readonly config: ClipTextConfig) {
    super();
    this.fc1 = this.child("fc1", new Linear(config.hiddenSize, config.intermediateSize));
    this.fc2 = this.child("fc2", new Linear(config.intermediateSize, config.hiddenSize));
    const f = config.initializerFactor;
    const d = config.hiddenSize;
    initNormal(this.fc1.weight, (2 * d) ** -0.5 * f);
    initNormal(this.fc2.weight, d ** -0.5 * (2 * config.numHiddenLayers) ** -0.5 * f);
    initZero(this.fc1.bias);
    initZero(this.fc2.bias);
  }
  forward(x: Tensor): Tensor {
    const h = this.fc1.forward(x);
    return this.fc2.forward(this.config.hiddenAct === "quick_gelu" ? h.quickGelu() : h.gelu());
  }
}

/** One pre-norm transformer layer (also the vision tower's: src/models/clip/vision-model.ts); mask null = no mask. */
export class ClipEncoderLayer extends Module {
  readonly self_attn: ClipAttention;
  readonly layer_norm1: LayerNorm;
  readonly mlp: ClipMlp;
  readonly layer_norm2: LayerNorm;
  constructor(config: ClipTextConfig) {
    super();
    this.self_attn = this.child("self_attn", new ClipAttention(config));
    this.layer_norm1 = this.child("layer_norm1", new LayerNorm(config.hiddenSize, config.layerNormEps));
    this.mlp = this.child("mlp", new ClipMlp(config));
    this.layer_norm2 = this.child("layer_norm2", new LayerNorm(config.hiddenSize, config.layerNormEps));
  }
  forward(x: Tensor, mask: Tensor | null): Tensor {
    const h = x.add(this.self_attn.forward(this.layer_norm1.forward(x), mask));
    return h.add(this.mlp.forward(this.layer_norm2.forward(h)));
  }
}

export class ClipEncoder extends Module {
  readonly layers: ModuleList<ClipEncoderLayer>;
  constructor(config: ClipTextConfig) {
    super();
    this.layers = this.child("layers", new ModuleList(Array.from({ length: config.numHiddenLayers }, () => new ClipEncoderLayer(config))));
  }
}

export interface ClipTextOutput {
  /** [N, L, D]: the final-layer-norm output (what Stable Diffusion's UNet attends to). */
  lastHiddenState: Tensor;
  /** [N, D]: lastHiddenState at each row's end-of-text token. */
  pooled: Tensor;
  /** [N, P] with a projection (CLIPTextModelWithProjection's text_embeds). */
  textEmbeds?: Tensor;
  /**
   * With outputHiddenStates: the embeddings and each layer's output (before the final layer norm),
   * numHiddenLayers + 1 tensors, as transformers' hidden_states ("clip skip" reads hiddenStates[-2]).
   */
  hiddenStates?: Tensor[];
}

/** transformers' CLIPTextTransformer (the `text_model.` prefix). */
class ClipTextTransformer extends Module {
  readonly embeddings: ClipTextEmbeddings;
  readonly encoder: ClipEncoder;
  readonly final_layer_norm: LayerNorm;
  constructor(config: ClipTextConfig) {
    super();
    this.embeddings = this.child("embeddings", new ClipTextEmbeddings(config));
    this.encoder = this.child("encoder", new ClipEncoder(config));
    this.final_layer_norm = this.child("final_layer_norm", new LayerNorm(config.hiddenSize, config.layerNormEps));
  }
}

export interface ClipTextForwardOptions {
  outputHiddenStates?: boolean;
}

/**
 * transformers' CLIPTextModel; with `withProjection` also CLIPTextModelWithProjection's
 * `text_projection` (a bias-free Linear D → projectionDim, top-level name "text_projection.weight").
 */
export class ClipTextModel extends Module {
  readonly text_model: ClipTextTransformer;
  readonly text_projection: Linear | null;
  constructor(readonly config: ClipTextConfig, opts: { withProjection?: boolean } = {}) {
    super();
    validateClipTextConfig(config);
    this.text_model = this.child("text_model", new ClipTextTransformer(config));
    this.text_projection = opts.withProjection
      ? this.child("text_projection", new Linear(config.hiddenSize, config.projectionDim, false))
      : null;
    if (this.text_projection) initNormal(this.text_projection.weight, config.hiddenSize ** -0.5 * config.initializerFactor);
  }

  get withProjection(): boolean {
    return this.text_projection !== null;
  }

  /** `ids` [N, L] integer token ids (L ≤ maxPositionEmbeddings). */
  forward(ids: Tensor, opts: ClipTextForwardOptions = {}): ClipTextOutput {
    if (ids.ndim !== 2) throw new Error(`ClipTextModel.forward: ids must be [N, L], got [${ids.shape.join(", ")}]`);
    const [n, l] = ids.shape as [number, number];
    if (l > this.config.maxPositionEmbeddings) {
      throw new Error(`ClipTextModel.forward: ${l} tokens exceed max_position_embeddings ${this.config.maxPositionEmbeddings}`);
    }
    const longIds = ids.dtype === "i64" ? ids : ids.to("i64");
    const tm = this.text_model;
    let h = tm.embeddings.forward(longIds);
    // Causal mask: −∞ above the diagonal (token i sees tokens 0..i).
    const mask = triu(full([l, l], -Infinity, { device: h.device }), 1);
    const hiddenStates: Tensor[] | undefined = opts.outputHiddenStates ? [h] : undefined;
    for (const layer of tm.encoder.layers) {
      h = layer.forward(h, mask);
      hiddenStates?.push(h);
    }
    const last = tm.final_layer_norm.forward(h);
    const eosIndex = this.config.eosTokenId === 2
      ? longIds.argmax(-1)
      : longIds.eq(this.config.eosTokenId).to("i32").argmax(-1);
    const d = this.config.hiddenSize;
    const index = eosIndex.reshape([n, 1, 1]).expand([n, 1, d]).toDevice(last.device);
    const pooled = last.gather(1, index).reshape([n, d]);
    const out: ClipTextOutput = { lastHiddenState: last, pooled };
    if (this.text_projection) out.textEmbeds = this.text_projection.forward(pooled);
    if (hiddenStates) out.hiddenStates = hiddenStates;
    return out;
  }

  /**
   * As Module.loadStateDict, but drops `text_model.embeddings.position_ids` (a buffer that older
   * transformers versions saved, e.g. in Stable Diffusion 1.x checkpoints; transformers ignores it).
   */
  override loadStateDict(state: Map<string, Tensor>, opts: { strict?: boolean; source?: string } = {}): { missing: string[]; unexpected: string[] } {
    const filtered = new Map([...state].filter(([k]) => k !== "text_model.embeddings.position_ids"));
    return super.loadStateDict(filtered, opts);
  }
}
