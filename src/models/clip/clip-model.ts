// transformers' `CLIPModel`: text tower + vision tower + the two bias-free projections into the
// shared embedding space + `logit_scale` (log of the contrastive temperature's inverse). The same
// state-dict names (text_model.*, vision_model.*, text_projection.weight, visual_projection.weight,
// logit_scale), so a hub folder's model.safetensors (openai/clip-vit-*, PickScore_v1, …) loads one
// to one.
//
//   get_text_features(ids)     = text_projection(pooled text state)        [N, P]
//   get_image_features(pixels) = visual_projection(post_layernorm(CLS))    [N, P]
//   logits_per_text[i][j]      = exp(logit_scale) · cos(text_i, image_j)
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { Module } from "../../nn/module.js";
import type { Linear } from "../../nn/layers.js";
import { readSafetensorsSync } from "../../io/safetensors.js";
import { readTorchCheckpoint } from "./torch-checkpoint.js";
import { scalar, type Tensor } from "../../tensor/index.js";
import { ClipTextModel, clipTextConfigFromJson, type ClipTextConfig } from "./text-model.js";
import { ClipVisionModel, clipVisionConfigFromJson, type ClipVisionConfig } from "./vision-model.js";

/** transformers' CLIPConfig. */
export interface ClipConfig {
  text: ClipTextConfig;
  vision: ClipVisionConfig;
  /** Width of the shared embedding space (both projections). */
  projectionDim: number;
  /** Initial logit_scale (the weights carry the trained value). */
  logitScaleInitValue: number;
}

/** transformers' CLIPConfig defaults for the fields a config.json may omit. */
export const CLIP_CONFIG_DEFAULTS = { projectionDim: 512, logitScaleInitValue: 2.6592 } as const;

const clipJson = z.looseObject({
  model_type: z.string().optional(),
  projection_dim: z.number().int().positive().optional(),
  logit_scale_init_value: z.number().optional(),
  text_config: z.record(z.string(), z.unknown()).nullable().optional(),
  vision_config: z.record(z.string(), z.unknown()).nullable().optional(),
  // older hub configs (openai/clip-vit-large-patch14) carry these beside text_config / vision_config;
  // transformers lets them override
  text_config_dict: z.record(z.string(), z.unknown()).nullable().optional(),
  vision_config_dict: z.record(z.string(), z.unknown()).nullable().optional(),
});

/**
 * Reads a CLIPModel config.json object. Fields equal to transformers' defaults may be absent (as
 * save_pretrained writes them); they are filled with CLIPConfig / CLIPTextConfig / CLIPVisionConfig
 * defaults.
 */
export function clipConfigFromJson(json: unknown, source = "config.json"): ClipConfig {
  const parsed = clipJson.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new Error(`${source}: not a valid CLIPConfig (${issues})`);
  }
  const j = parsed.data;
  if (j.model_type !== undefined && j.model_type !== "clip") {
    throw new Error(`${source}: model_type is "${j.model_type}", expected "clip" (a transformers CLIPModel folder)`);
  }
  const text = clipTextConfigFromJson({ ...(j.text_config ?? {}), ...(j.text_config_dict ?? {}) }, `${source} (text_config)`);
  const vision = clipVisionConfigFromJson({ ...(j.vision_config ?? {}), ...(j.vision_config_dict ?? {}) }, `${source} (vision_config)`);
  return {
    text, vision,
    projectionDim: j.projection_dim ?? CLIP_CONFIG_DEFAULTS.projectionDim,
    logitScaleInitValue: j.logit_scale_init_value ?? CLIP_CONFIG_DEFAULTS.logitScaleInitValue,
  };
}

export class ClipModel extends Module {
  /** The towers as standalone models (their parts are registered here under transformers' names). */
  readonly textTower: ClipTextModel;
  readonly visionTower: ClipVisionModel;
  readonly logit_scale: Tensor;
  constructor(readonly config: ClipConfig) {
    super();
    const p = config.projectionDim;
    this.textTower = new ClipTextModel({ ...config.text, projectionDim: p }, { withProjection: true });
    this.visionTower = new ClipVisionModel({ ...config.vision, projectionDim: p }, { withProjection: true });
    // registration order as transformers: text_model, vision_model, visual_projection, text_projection, logit_scale
    this.child("text_model", this.textTower.text_model);
    this.child("vision_model", this.visionTower.vision_model);
    this.child("visual_projection", this.visionTower.visual_projection as Linear);
    this.child("text_projection", this.textTower.text_projection as Linear);
    this.logit_scale = this.param("logit_scale", scalar(config.logitScaleInitValue));
  }

  /** get_text_features: ids [N, L] → [N, P] (unnormalised). Padding after the end token does not matter (causal). */
  textFeatures(ids: Tensor): Tensor {
    return this.textTower.forward(ids).textEmbeds!;
  }

  /** get_image_features: pixels [N, C, S, S] from the image processor → [N, P] (unnormalised). */
  imageFeatures(pixels: Tensor): Tensor {
    return this.visionTower.forward(pixels).imageEmbeds!;
  }

  /** exp(logit_scale) as a number. */
  logitScaleExp(): number {
    return Math.exp(this.logit_scale.item());
  }

  /** Drops the `*.embeddings.position_ids` buffers older transformers versions saved. */
  override loadStateDict(state: Map<string, Tensor>, opts: { strict?: boolean; source?: string } = {}): { missing: string[]; unexpected: string[] } {
    return super.loadStateDict(new Map([...state].filter(([k]) => !k.endsWith("embeddings.position_ids"))), opts);
  }
}

/**
 * Loads a transformers CLIPModel folder (config.json + model.safetensors, or pytorch_model.bin as
 * torch.save writes it). Missing or mismatched
 * weights are an error naming the file and the keys.
 */
export function loadClipModel(dir: string): ClipModel {
  const configPath = join(dir, "config.json");
  const weightsPath = join(dir, "model.safetensors");
  if (!existsSync(configPath)) throw new Error(`${dir}: no config.json (a transformers CLIPModel folder holds config.json and model.safetensors)`);
  const binPath = join(dir, "pytorch_model.bin");
  const useBin = !existsSync(weightsPath) && existsSync(binPath);
  if (!existsSync(weightsPath) && !useBin) {
    throw new Error(`${dir}: no model.safetensors (or pytorch_model.bin); expected the CLIPModel weights text_model.*, vision_model.*, text_projection.weight, visual_projection.weight, logit_scale`);
  }
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(configPath, "utf8"));
  } catch (err) {
    throw new Error(`${configPath}: not valid JSON (${(err as Error).message})`);
  }
  const model = new ClipModel(clipConfigFromJson(json, configPath));
  const source = useBin ? binPath : weightsPath;
  const tensors = useBin ? readTorchCheckpoint(binPath).tensors : readSafetensorsSync(weightsPath).tensors;
  try {
    model.loadStateDict(tensors, { source });
  } catch (err) {
    model.dispose();
    throw err;
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
  model.requiresGrad(false);
  model.eval();
  return model;
}
