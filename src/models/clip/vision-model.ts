// The CLIP vision transformer as transformers' `CLIPVisionModel` / `CLIPVisionModelWithProjection`
// (the same parameter names, so a transformers `model.safetensors` loads one to one):
//
//   pixels [N, C, S, S] → patch conv (P×P, stride P, no bias) → [N, (S/P)², D]
//     → prepend class_embedding → + position_embedding → pre_layrnorm (transformers' spelling)
//     → L pre-norm layers without a mask (the text tower's ClipEncoderLayer)
//   pooled = post_layernorm(hidden[:, 0])            (CLIPVisionModel's pooler_output)
//   imageEmbeds = visual_projection(pooled)          (bias-free; WithProjection / CLIPModel)
import { z } from "zod";
import { Module, ModuleList } from "../../nn/module.js";
import { Conv2d, Embedding, LayerNorm, Linear } from "../../nn/layers.js";
import { normal } from "../../nn/init.js";
import { arange, cat, noGrad, type Tensor } from "../../tensor/index.js";
import { ClipEncoderLayer, DEFAULT_CLIP_TEXT_CONFIG, type ClipHiddenAct, type ClipTextConfig } from "./text-model.js";

/** transformers' CLIPVisionConfig (camelCase here; snake_case in config.json). */
export interface ClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numChannels: number;
  imageSize: number;
  patchSize: number;
  hiddenAct: ClipHiddenAct;
  layerNormEps: number;
  /** Width of visual_projection in CLIPVisionModelWithProjection (CLIPModel uses its own projection_dim). */
  projectionDim: number;
  initializerFactor: number;
}

/** Defaults as transformers' CLIPVisionConfig() (ViT-B/32). */
export const DEFAULT_CLIP_VISION_CONFIG: ClipVisionConfig = {
  hiddenSize: 768,
  intermediateSize: 3072,
  numHiddenLayers: 12,
  numAttentionHeads: 12,
  numChannels: 3,
  imageSize: 224,
  patchSize: 32,
  hiddenAct: "quick_gelu",
  layerNormEps: 1e-5,
  projectionDim: 512,
  initializerFactor: 1.0,
};

const clipVisionJson = z.looseObject({
  hidden_size: z.number().int().positive().optional(),
  intermediate_size: z.number().int().positive().optional(),
  num_hidden_layers: z.number().int().positive().optional(),
  num_attention_heads: z.number().int().positive().optional(),
  num_channels: z.number().int().positive().optional(),
  image_size: z.number().int().positive().optional(),
  patch_size: z.number().int().positive().optional(),
  hidden_act: z.enum(["quick_gelu", "gelu"]).optional(),
  layer_norm_eps: z.number().positive().optional(),
  projection_dim: z.number().int().positive().optional(),
  initializer_factor: z.number().optional(),
});

/** Reads a CLIPVisionConfig object (missing fields take transformers' defaults). */
export function clipVisionConfigFromJson(json: unknown, source = "config.json (vision_config)"): ClipVisionConfig {
  const parsed = clipVisionJson.safeParse(json ?? {});
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new Error(`${source}: not a valid CLIPVisionConfig (${issues})`);
  }
  const j = parsed.data;
  const d = DEFAULT_CLIP_VISION_CONFIG;
  const config: ClipVisionConfig = {
    hiddenSize: j.hidden_size ?? d.hiddenSize,
    intermediateSize: j.intermediate_size ?? d.intermediateSize,
    numHiddenLayers: j.num_hidden_layers ?? d.numHiddenLayers,
    numAttentionHeads: j.num_attention_heads ?? d.numAttentionHeads,
    numChannels: j.num_channels ?? d.numChannels,
    imageSize: j.image_size ?? d.imageSize,
    patchSize: j.patch_size ?? d.patchSize,
    hiddenAct: j.hidden_act ?? d.hiddenAct,
    layerNormEps: j.layer_norm_eps ?? d.layerNormEps,
    projectionDim: j.projection_dim ?? d.projectionDim,
    initializerFactor: j.initializer_factor ?? d.initializerFactor,
  };
  validateClipVisionConfig(config, source);
  return config;
}

/** The config as transformers writes a vision_config. */
export function clipVisionConfigToJson(config: ClipVisionConfig): Record<string, unknown> {
  return {
    model_type: "clip_vision_model",
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numHiddenLayers,
    num_attention_heads: config.numAttentionHeads,
    num_channels: config.numChannels,
    image_size: config.imageSize,
    patch_size: config.patchSize,
    hidden_act: config.hiddenAct,
    layer_norm_eps: config.layerNormEps,
    projection_dim: config.projectionDim,
    initializer_factor: config.initializerFactor,
  };
}

export function validateClipVisionConfig(config: ClipVisionConfig, source = "ClipVisionConfig"): void {
  if (config.hiddenSize % config.numAttentionHeads !== 0) {
    throw new Error(`${source}: hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ${config.numAttentionHeads}`);
  }
  if (config.imageSize % config.patchSize !== 0) {
    throw new Error(`${source}: image_size ${config.imageSize} is not a multiple of patch_size ${config.patchSize}`);
  }
}

/** The shared encoder layer is written against ClipTextConfig; it reads only these fields. */
function layerConfig(config: ClipVisionConfig): ClipTextConfig {
  return {
    ...DEFAULT_CLIP_TEXT_CONFIG,
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    numHiddenLayers: config.numHiddenLayers,
    numAttentionHeads: config.numAttentionHeads,
    hiddenAct: config.hiddenAct,
    layerNormEps: config.layerNormEps,
    initializerFactor: config.initializerFactor,
  };
}

function initNormal(t: Tensor, std: number): void {
  noGrad(() => {
    const v = normal(t.shape, 0, std);
    t.copy_(v);
    v.dispose();
  });
}

class ClipVisionEmbeddings extends Module {
  readonly class_embedding: Tensor;
  readonly patch_embedding: Conv2d;
  readonly position_embedding: Embedding;
  readonly numPositions: number;
  constructor(readonly config: ClipVisionConfig) {
    super();
    const d = config.hiddenSize;
    this.class_embedding = this.param("class_embedding", normal([d], 0, d ** -0.5 * config.initializerFactor));
    this.patch_embedding = this.child("patch_embedding", new Conv2d(config.numChannels, d, config.patchSize, { stride: config.patchSize, bias: false }));
    this.numPositions = (config.imageSize / config.patchSize) ** 2 + 1;
    this.position_embedding = this.child("position_embedding", new Embedding(this.numPositions, d));
    const std = 0.02 * config.initializerFactor;
    initNormal(this.patch_embedding.weight, std);
    initNormal(this.position_embedding.weight, std);
  }
  forward(pixels: Tensor): Tensor {
    const n = pixels.shape[0]!;
    const d = this.config.hiddenSize;
    const patches = this.patch_embedding.forward(pixels).flatten(2).transpose(1, 2);
    const cls = this.class_embedding.reshape([1, 1, d]).expand([n, 1, d]);
    const positions = arange(0, this.numPositions, 1, { dtype: "i64", device: pixels.device });
    return cat([cls, patches], 1).add(this.position_embedding.forward(positions));
  }
}

class ClipVisionEncoder extends Module {
  readonly layers: ModuleList<ClipEncoderLayer>;
  constructor(config: ClipVisionConfig) {
    super();
    const lc = layerConfig(config);
    this.layers = this.child("layers", new ModuleList(Array.from({ length: config.numHiddenLayers }, () => new ClipEncoderLayer(lc))));
  }
}

/** transformers' CLIPVisionTransformer (the `vision_model.` prefix). */
export class ClipVisionTransformer extends Module {
  readonly embeddings: ClipVisionEmbeddings;
  readonly pre_layrnorm: LayerNorm;
  readonly encoder: ClipVisionEncoder;
  readonly post_layernorm: LayerNorm;
  constructor(readonly config: ClipVisionConfig) {
    super();
    validateClipVisionConfig(config);
    this.embeddings = this.child("embeddings", new ClipVisionEmbeddings(config));
    this.pre_layrnorm = this.child("pre_layrnorm", new LayerNorm(config.hiddenSize, config.layerNormEps));
    this.encoder = this.child("encoder", new ClipVisionEncoder(config));
    this.post_layernorm = this.child("post_layernorm", new LayerNorm(config.hiddenSize, config.layerNormEps));
  }

  /** pixels [N, C, S, S] (normalised as the image processor does) → pooled [N, D] and the last hidden state. */
  forward(pixels: Tensor): { lastHiddenState: Tensor; pooled: Tensor } {
    const c = this.config;
    if (pixels.ndim !== 4 || pixels.shape[1] !== c.numChannels || pixels.shape[2] !== c.imageSize || pixels.shape[3] !== c.imageSize) {
      throw new Error(`CLIP vision model: pixels must be [N, ${c.numChannels}, ${c.imageSize}, ${c.imageSize}], got [${pixels.shape.join(", ")}]`);
    }
    let h = this.pre_layrnorm.forward(this.embeddings.forward(pixels.dtype === "f32" ? pixels : pixels.to("f32")));
    for (const layer of this.encoder.layers) h = layer.forward(h, null);
    const n = h.shape[0]!;
    const cls = h.slice(1, 0, 1).reshape([n, c.hiddenSize]);
    return { lastHiddenState: h, pooled: this.post_layernorm.forward(cls) };
  }
}

export interface ClipVisionOutput {
  lastHiddenState: Tensor;
  /** [N, D]: post_layernorm of the class token (pooler_output). */
  pooled: Tensor;
  /** [N, P] with a projection (image_embeds). */
  imageEmbeds?: Tensor;
}

/**
 * transformers' CLIPVisionModel; with `withProjection` CLIPVisionModelWithProjection (adds the
 * bias-free `visual_projection` D → projectionDim at the top level).
 */
export class ClipVisionModel extends Module {
  readonly vision_model: ClipVisionTransformer;
  readonly visual_projection: Linear | null;
  constructor(readonly config: ClipVisionConfig, opts: { withProjection?: boolean } = {}) {
    super();
    this.vision_model = this.child("vision_model", new ClipVisionTransformer(config));
    this.visual_projection = opts.withProjection ? this.child("visual_projection", new Linear(config.hiddenSize, config.projectionDim, false)) : null;
    if (this.visual_projection) initNormal(this.visual_projection.weight, config.hiddenSize ** -0.5 * config.initializerFactor);
  }
  forward(pixels: Tensor): ClipVisionOutput {
    const out: ClipVisionOutput = this.vision_model.forward(pixels);
    if (this.visual_projection) out.imageEmbeds = this.visual_projection.forward(out.pooled);
    return out;
  }
  /** Drops `vision_model.embeddings.position_ids` (a buffer older transformers versions saved). */
  override loadStateDict(state: Map<string, Tensor>, opts: { strict?: boolean; source?: string } = {}): { missing: string[]; unexpected: string[] } {
    return super.loadStateDict(new Map([...state].filter(([k]) => !k.endsWith("embeddings.position_ids"))), opts);
  }
}
