// The UNet's configuration: diffusers' `UNet2DConditionModel` config.json fields (snake_case on
// disk, camelCase here), their diffusers defaults, parsing with clear errors, and the tiny
// configuration used for CPU work.
//
// Naming trap kept from diffusers: `attention_head_dim` is really the number of attention HEADS
// in these blocks (SD1.5: 8 heads of 40, 80, 160 channels); the per-head size is
// channels / heads. `num_attention_heads`, when present, takes precedence.

export type DownBlockType = "CrossAttnDownBlock2D" | "DownBlock2D";
export type UpBlockType = "CrossAttnUpBlock2D" | "UpBlock2D";
export type MidBlockType = "UNetMidBlock2DCrossAttn";

export interface UNetConfig {
  /** Latent (or pixel) side length the model was trained at; informative only. */
  sampleSize: number | [number, number] | null;
  inChannels: number;
  outChannels: number;
  /** Maps the input from [0, 1] to [−1, 1] (2x − 1) before conv_in. */
  centerInputSample: boolean;
  /** Timestep embedding layout: cos first when true (SD: true). */
  flipSinToCos: boolean;
  /** get_timestep_embedding's downscale_freq_shift (SD: 0). */
  freqShift: number;
  downBlockTypes: DownBlockType[];
  /** null: no middle block (the deepest features go straight to the up path). */
  midBlockType: MidBlockType | null;
  upBlockTypes: UpBlockType[];
  /** attn1 attends to the text instead of the image itself (per down block, or all). */
  onlyCrossAttention: boolean | boolean[];
  blockOutChannels: number[];
  layersPerBlock: number | number[];
  downsamplePadding: number;
  midBlockScaleFactor: number;
  dropout: number;
  actFn: "silu";
  normNumGroups: number;
  normEps: number;
  crossAttentionDim: number | number[];
  transformerLayersPerBlock: number | number[];
  /** Number of heads (diffusers' legacy name; see the file comment). */
  attentionHeadDim: number | number[];
  numAttentionHeads: number | number[] | null;
  /** Linear (SD2) instead of 1×1 conv (SD1) proj_in / proj_out in the transformer blocks. */
  useLinearProjection: boolean;
  /** Computes attention scores in float32 when the model runs in half precision (SD2.1-v). */
  upcastAttention: boolean;
  convInKernel: number;
  convOutKernel: number;
  /** Width of the time embedding; null = 4 × blockOutChannels[0]. */
  timeEmbeddingDim: number | null;
  /**
   * Extra conditioning added to the time embedding. "text_time" (SDXL): the pooled text
   * embedding and the micro-conditioning "time ids" (original size, crop top-left, target size),
   * each id embedded sinusoidally with additionTimeEmbedDim channels, through add_embedding.
   */
  additionEmbedType: "text_time" | null;
  /** Sinusoidal width per time id (SDXL: 256). */
  additionTimeEmbedDim: number | null;
  /** add_embedding's input width = pooled text width + (number of time ids) × additionTimeEmbedDim (SDXL: 1280 + 6·256 = 2816). */
  projectionClassEmbeddingsInputDim: number | null;
}

/** diffusers' constructor defaults (the SD1.x UNet with cross_attention_dim 1280). */
export const DIFFUSERS_UNET_DEFAULTS: UNetConfig = {
  sampleSize: null,
  inChannels: 4,
  outChannels: 4,
  centerInputSample: false,
  flipSinToCos: true,
  freqShift: 0,
  downBlockTypes: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  midBlockType: "UNetMidBlock2DCrossAttn",
  upBlockTypes: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  onlyCrossAttention: false,
  blockOutChannels: [320, 640, 1280, 1280],
  layersPerBlock: 2,
  downsamplePadding: 1,
  midBlockScaleFactor: 1,
  dropout: 0,
  actFn: "silu",
  normNumGroups: 32,
  normEps: 1e-5,
  crossAttentionDim: 1280,
  transformerLayersPerBlock: 1,
  attentionHeadDim: 8,
  numAttentionHeads: null,
  useLinearProjection: false,
  upcastAttention: false,
  convInKernel: 3,
  convOutKernel: 3,
  timeEmbeddingDim: null,
  additionEmbedType: null,
  additionTimeEmbedDim: null,
  projectionClassEmbeddingsInputDim: null,
};

/** Stable Diffusion 1.5's unet/config.json values. */
export const SD15_UNET_CONFIG: UNetConfig = {
  ...DIFFUSERS_UNET_DEFAULTS,
  sampleSize: 64,
  crossAttentionDim: 768,
};

/**
 * A small pixel-space UNet that trains on two CPU cores: 32×32 RGB, three resolutions (32, 16,
 * 8), text cross-attention at 16×16 and 8×8 plus the middle block. Same block types as SD1.5,
 * so everything that works on it works on the real model. Attention sits below full resolution
 * on purpose: at 32×32 (1024 tokens) it made a batch-16 training step about 5× slower
 * (5.4 s vs 1.0 s of CPU time on one thread).
 */
export const TINY_UNET_CONFIG: UNetConfig = {
  ...DIFFUSERS_UNET_DEFAULTS,
  sampleSize: 32,
  inChannels: 3,
  outChannels: 3,
  downBlockTypes: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  upBlockTypes: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  blockOutChannels: [32, 64, 64],
  layersPerBlock: 1,
  normNumGroups: 8,
  crossAttentionDim: 64,
  attentionHeadDim: 4,
};

// ---- snake_case <-> camelCase ----------------------------------------------------------------

const KEY_OF: Record<keyof UNetConfig, string> = {
  sampleSize: "sample_size",
  inChannels: "in_channels",
  outChannels: "out_channels",
  centerInputSample: "center_input_sample",
  flipSinToCos: "flip_sin_to_cos",
  freqShift: "freq_shift",
  downBlockTypes: "down_block_types",
  midBlockType: "mid_block_type",
  upBlockTypes: "up_block_types",
  onlyCrossAttention: "only_cross_attention",
  blockOutChannels: "block_out_channels",
  layersPerBlock: "layers_per_block",
  downsamplePadding: "downsample_padding",
  midBlockScaleFactor: "mid_block_scale_factor",
  dropout: "dropout",
  actFn: "act_fn",
  normNumGroups: "norm_num_groups",
  normEps: "norm_eps",
  crossAttentionDim: "cross_attention_dim",
  transformerLayersPerBlock: "transformer_layers_per_block",
  attentionHeadDim: "attention_head_dim",
  numAttentionHeads: "num_attention_heads",
  useLinearProjection: "use_linear_projection",
  upcastAttention: "upcast_attention",
  convInKernel: "conv_in_kernel",
  convOutKernel: "conv_out_kernel",
  timeEmbeddingDim: "time_embedding_dim",
  additionEmbedType: "addition_embed_type",
  additionTimeEmbedDim: "addition_time_embed_dim",
  projectionClassEmbeddingsInputDim: "projection_class_embeddings_input_dim",
};

/**
 * diffusers fields this implementation does not build. A config may carry them at the value
 * shown (the diffusers default, which is what SD1.x/SD2.x ship); any other value is an error,
 * since silently ignoring it would build a different network than the weights expect.
 */
const UNSUPPORTED_UNLESS: Record<string, unknown> = {
  dual_cross_attention: false,
  resnet_time_scale_shift: "default",
  time_embedding_type: "positional",
  time_embedding_act_fn: null,
  timestep_post_act: null,
  time_cond_proj_dim: null,
  class_embed_type: null,
  num_class_embeds: null,
  class_embeddings_concat: false,
  // only read by addition_embed_type "text" / "text_image", which are not built
  addition_embed_type_num_heads: 64,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  attention_type: "default",
  cross_attention_norm: null,
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1,
  reverse_transformer_layers_per_block: null,
  mid_block_only_cross_attention: null,
};

export class UNetConfigError extends Error {
  override readonly name = "UNetConfigError";
}

export interface ParsedUNetConfig {
  config: UNetConfig;
  /** Keys present in the file that this implementation neither uses nor checks. */
  ignoredKeys: string[];
}

/**
 * Reads a diffusers `unet/config.json` object. Missing fields take diffusers' defaults; keys
 * starting with "_" are metadata; unknown keys are returned in `ignoredKeys`; unsupported
 * values throw a UNetConfigError naming the key.
 */
export function parseUNetConfig(json: unknown, source = "unet config"): ParsedUNetConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new UNetConfigError(`${source}: expected a JSON object (diffusers' unet/config.json)`);
  }
  const raw = json as Record<string, unknown>;
  const cls = raw["_class_name"];
  if (cls !== undefined && cls !== "UNet2DConditionModel") {
    throw new UNetConfigError(`${source}: _class_name is "${String(cls)}", but only UNet2DConditionModel configs are supported`);
  }
  const camelOf = new Map(Object.entries(KEY_OF).map(([camel, snake]) => [snake, camel as keyof UNetConfig]));
  const partial: Partial<Record<keyof UNetConfig, unknown>> = {};
  const ignoredKeys: string[] = [];
  for (const [key, value] of Object.entries(raw)) {
    if (key.startsWith("_")) continue;
    const camel = camelOf.get(key);
    if (camel !== undefined) {
      partial[camel] = value;
      continue;
    }
    if (key in UNSUPPORTED_UNLESS) {
      const ok = UNSUPPORTED_UNLESS[key];
      if (!sameValue(value, ok)) {
        throw new UNetConfigError(
          `${source}: "${key}" = ${JSON.stringify(value)} is not supported (only ${JSON.stringify(ok)}); ` +
          `this UNet builds the SD1.x/SD2.x architecture`,
        );
      }
      continue;
    }
    ignoredKeys.push(key);
  }
  const config = resolveUNetConfig(partial as Partial<UNetConfig>, source);
  return { config, ignoredKeys };
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === undefined) return true;
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Fills defaults and validates; throws a UNetConfigError naming the offending key. */
export function resolveUNetConfig(partial: Partial<UNetConfig>, source = "unet config"): UNetConfig {
  const c: UNetConfig = { ...DIFFUSERS_UNET_DEFAULTS };
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (c as unknown as Record<string, unknown>)[k] = v;
  const fail = (key: keyof UNetConfig, what: string): never => {
    throw new UNetConfigError(`${source}: "${KEY_OF[key]}" ${what}`);
  };
  const posInt = (key: keyof UNetConfig, v: unknown): number => {
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) fail(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const bool = (key: keyof UNetConfig, v: unknown): boolean => {
    if (typeof v !== "boolean") fail(key, `must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean;
  };
  const num = (key: keyof UNetConfig, v: unknown): number => {
    if (typeof v !== "number" || !Number.isFinite(v)) fail(key, `must be a number, got ${JSON.stringify(v)}`);
    return v as number;
  };

  if (!Array.isArray(c.blockOutChannels) || c.blockOutChannels.length === 0) fail("blockOutChannels", "must be a non-empty list of channel counts");
  c.blockOutChannels.forEach((v) => posInt("blockOutChannels", v));
  const n = c.blockOutChannels.length;
  if (!Array.isArray(c.downBlockTypes) || c.downBlockTypes.length !== n) {
    fail("downBlockTypes", `must list one block per entry of block_out_channels (${n})`);
  }
  if (!Array.isArray(c.upBlockTypes) || c.upBlockTypes.length !== n) {
    fail("upBlockTypes", `must list one block per entry of block_out_channels (${n})`);
  }
  for (const t of c.downBlockTypes) {
    if (t !== "CrossAttnDownBlock2D" && t !== "DownBlock2D") fail("downBlockTypes", `contains "${String(t)}"; supported: CrossAttnDownBlock2D, DownBlock2D`);
  }
  for (const t of c.upBlockTypes) {
    if (t !== "CrossAttnUpBlock2D" && t !== "UpBlock2D") fail("upBlockTypes", `contains "${String(t)}"; supported: CrossAttnUpBlock2D, UpBlock2D`);
  }
  if (c.midBlockType !== null && c.midBlockType !== "UNetMidBlock2DCrossAttn") {
    fail("midBlockType", `is "${String(c.midBlockType)}"; supported: UNetMidBlock2DCrossAttn or null`);
  }
  posInt("inChannels", c.inChannels);
  posInt("outChannels", c.outChannels);
  bool("centerInputSample", c.centerInputSample);
  bool("flipSinToCos", c.flipSinToCos);
  num("freqShift", c.freqShift);
  bool("useLinearProjection", c.useLinearProjection);
  bool("upcastAttention", c.upcastAttention);
  posInt("normNumGroups", c.normNumGroups);
  if (num("normEps", c.normEps) <= 0) fail("normEps", "must be positive");
  num("midBlockScaleFactor", c.midBlockScaleFactor);
  if (c.actFn !== "silu") fail("actFn", `is "${String(c.actFn)}"; only "silu" is supported`);
  if (c.dropout !== 0) fail("dropout", `is ${JSON.stringify(c.dropout)}; only 0 is supported`);
  if (c.downsamplePadding !== 1) fail("downsamplePadding", `is ${JSON.stringify(c.downsamplePadding)}; only 1 is supported`);
  for (const key of ["convInKernel", "convOutKernel"] as const) {
    if (posInt(key, c[key]) % 2 !== 1) fail(key, "must be odd (the padding keeps the size)");
  }
  if (c.timeEmbeddingDim !== null) posInt("timeEmbeddingDim", c.timeEmbeddingDim);
  if (c.additionEmbedType !== null) {
    if (c.additionEmbedType !== "text_time") {
      fail("additionEmbedType", `is ${JSON.stringify(c.additionEmbedType)}; supported: "text_time" (SDXL) or null`);
    }
    if (c.additionTimeEmbedDim === null) fail("additionTimeEmbedDim", 'must be set when addition_embed_type is "text_time" (SDXL: 256)');
    posInt("additionTimeEmbedDim", c.additionTimeEmbedDim);
    if (c.projectionClassEmbeddingsInputDim === null) {
      fail("projectionClassEmbeddingsInputDim", 'must be set when addition_embed_type is "text_time" (SDXL: 2816 = 1280 + 6 × 256)');
    }
    posInt("projectionClassEmbeddingsInputDim", c.projectionClassEmbeddingsInputDim);
  }
  if (c.sampleSize !== null && typeof c.sampleSize !== "number" && !(Array.isArray(c.sampleSize) && c.sampleSize.length === 2)) {
    fail("sampleSize", "must be a number, a [height, width] pair or null");
  }
  const perBlock = <T>(key: keyof UNetConfig, v: T | T[], check: (x: T) => void): void => {
    if (Array.isArray(v)) {
      if (v.length !== n) fail(key, `has ${v.length} entries but there are ${n} blocks`);
      v.forEach(check);
    } else check(v);
  };
  perBlock("onlyCrossAttention", c.onlyCrossAttention, (v) => bool("onlyCrossAttention", v));
  perBlock("layersPerBlock", c.layersPerBlock, (v) => posInt("layersPerBlock", v));
  perBlock("crossAttentionDim", c.crossAttentionDim, (v) => posInt("crossAttentionDim", v));
  perBlock("transformerLayersPerBlock", c.transformerLayersPerBlock, (v) => posInt("transformerLayersPerBlock", v));
  perBlock("attentionHeadDim", c.attentionHeadDim, (v) => posInt("attentionHeadDim", v));
  if (c.numAttentionHeads !== null) perBlock("numAttentionHeads", c.numAttentionHeads, (v) => posInt("numAttentionHeads", v));

  const heads = c.numAttentionHeads ?? c.attentionHeadDim;
  const headsKey = c.numAttentionHeads !== null ? "numAttentionHeads" : "attentionHeadDim";
  c.blockOutChannels.forEach((ch, i) => {
    if (ch % c.normNumGroups !== 0) fail("normNumGroups", `(${c.normNumGroups}) must divide every block_out_channels entry; ${ch} is not divisible`);
    const h = Array.isArray(heads) ? heads[i]! : heads;
    const usesAttn = c.downBlockTypes[i] === "CrossAttnDownBlock2D" || c.upBlockTypes[n - 1 - i] === "CrossAttnUpBlock2D";
    if (usesAttn && ch % h !== 0) fail(headsKey, `(${h} heads) must divide the block's ${ch} channels`);
  });
  return c;
}

/** The config as diffusers writes it (snake_case, with _class_name), for config.json. */
export function toDiffusersConfig(config: UNetConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { _class_name: "UNet2DConditionModel" };
  for (const [camel, snake] of Object.entries(KEY_OF)) out[snake] = config[camel as keyof UNetConfig];
  return out;
}

// ---- per-block values, resolved as diffusers does -------------------------------------------

export interface ResolvedBlocks {
  onlyCrossAttention: boolean[];
  layersPerBlock: number[];
  crossAttentionDim: number[];
  transformerLayersPerBlock: number[];
  /** Heads per down block (num_attention_heads ?? attention_head_dim, broadcast). */
  numHeads: number[];
  timeEmbedDim: number;
}

export function resolveBlocks(c: UNetConfig): ResolvedBlocks {
  const n = c.blockOutChannels.length;
  const list = <T>(v: T | T[]): T[] => (Array.isArray(v) ? [...v] : Array.from({ length: n }, () => v));
  return {
    onlyCrossAttention: list(c.onlyCrossAttention),
    layersPerBlock: list(c.layersPerBlock),
    crossAttentionDim: list(c.crossAttentionDim),
    transformerLayersPerBlock: list(c.transformerLayersPerBlock),
    numHeads: list(c.numAttentionHeads ?? c.attentionHeadDim),
    timeEmbedDim: c.timeEmbeddingDim ?? c.blockOutChannels[0]! * 4,
  };
}
