// The paper's CLIP-based scorers behind the RewardModel contract, from weights on disk (nothing is
// downloaded). Each takes a CLIP backbone: a transformers CLIPModel folder (config.json +
// model.safetensors or pytorch_model.bin, optional preprocessor_config.json and tokenizer files) or
// an open_clip checkpoint, .safetensors or torch.save (converted on load: src/models/clip/open-clip.ts).
//
//   clip       CLIP score = 100 · cos(image, prompt), torchmetrics' CLIPScore per sample (torchmetrics
//              clamps only its batch mean at 0; a per-sample clamp would turn every negative into a
//              tie). Hessel et al.'s CLIP-S is 2.5·max(cos, 0), i.e. 0.025 × this when positive.
//   pickscore  PickScore (Kirstain et al. 2023): exp(logit_scale) · cos(image, prompt), as its model
//              card computes it from get_image_features / get_text_features.
//   hpsv2      HPS v2 (Wu et al. 2023): cos(image, prompt) of its open_clip ViT-H-14, as HPSv2's
//              score.py (diagonal of normalised image_features @ text_featuresᵀ; no scale).
//
// Images go through CLIPImageProcessor (preprocessor_config.json, else CLIPImageProcessor's
// defaults at the model's image size, which is also open_clip's val transform); prompts through
// the CLIP BPE (the folder's vocab.json + merges.txt, else the shipped CLIP vocabulary), truncated
// to the text tower's 77 positions. Scoring runs in batches and reports each batch.
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { ClipModel, loadClipModel } from "../models/clip/clip-model.js";
import {
  preprocessImages, readClipImageProcessorConfig, squareProcessorConfig, type ClipImageProcessorConfig,
} from "../models/clip/image-processor.js";
import { loadOpenClipModel } from "../models/clip/open-clip.js";
import { ClipTokenizer } from "../models/clip/tokenizer.js";
import type { RgbImage } from "../sample/generate.js";
import { cat, keep, noGrad, tensor, tidy, type Tensor } from "../tensor/index.js";
import { checkRgb } from "./images.js";
import { checkRewardInputs, type RewardModel, type ScoreOptions } from "./reward.js";

/** A CLIP model with its image processor and tokenizer. */
export interface ClipBackbone {
  model: ClipModel;
  processor: ClipImageProcessorConfig;
  tokenizer: ClipTokenizer;
  /** Where it came from and how, for descriptions and errors. */
  source: string;
  format: "transformers" | "open_clip";
}

export interface ClipBackboneOptions {
  /** open_clip architecture when no open_clip_config.json is beside the weights (default ViT-H-14). */
  architecture?: string;
}

function folderTokenizer(dir: string): ClipTokenizer | null {
  for (const d of [dir, join(dir, "tokenizer")]) {
    if (existsSync(join(d, "vocab.json")) && existsSync(join(d, "merges.txt"))) return ClipTokenizer.fromFolder(d);
  }
  return null;
}

/**
 * Loads a CLIP backbone from a transformers CLIPModel folder or an open_clip safetensors file (or a
 * folder holding one and no config.json).
 */
export function loadClipBackbone(path: string, opts: ClipBackboneOptions = {}): ClipBackbone {
  if (!existsSync(path)) {
    throw new Error(`${path}: not found; give a transformers CLIPModel folder (config.json + model.safetensors) or an open_clip checkpoint as .safetensors`);
  }
  const isDir = statSync(path).isDirectory();
  if (isDir && existsSync(join(path, "config.json"))) {
    const model = loadClipModel(path);
    try {
      let processor: ClipImageProcessorConfig | null = null;
      for (const p of [join(path, "preprocessor_config.json"), join(path, "processor", "preprocessor_config.json")]) {
        if (existsSync(p)) { processor = readClipImageProcessorConfig(p); break; }
      }
      const tokenizer = folderTokenizer(path) ?? (existsSync(join(path, "processor")) ? folderTokenizer(join(path, "processor")) : null) ?? ClipTokenizer.fromFile();
      if (tokenizer.vocabSize > model.config.text.vocabSize) {
        throw new Error(`${path}: the tokenizer has ${tokenizer.vocabSize} tokens but the text tower only ${model.config.text.vocabSize}`);
      }
      return {
        model, tokenizer, format: "transformers", source: path,
        processor: processor ?? squareProcessorConfig(model.config.vision.imageSize),
      };
    } catch (err) {
      model.dispose();
      throw err;
    }
  }
  const loaded = loadOpenClipModel(path, opts);
  // open_clip's tokenizer: the CLIP BPE, padded with 0
  return { model: loaded.model, processor: loaded.processor, tokenizer: ClipTokenizer.fromFile(undefined, { padToken: 0 }), format: "open_clip", source: loaded.weightsPath };
}

function l2normalize(x: Tensor, zeroTo = 1e-12): Tensor {
  return x.div(x.norm([1], true).clamp(zeroTo));
}

export interface ClipScorerOptions {
  /** Images per forward pass (default 16). */
  batchSize?: number;
}

/** Batched, normalised CLIP embeddings of images and prompts. */
export class ClipScorer {
  readonly batchSize: number;
  constructor(readonly backbone: ClipBackbone, opts: ClipScorerOptions = {}) {
    this.batchSize = Math.max(1, Math.floor(opts.batchSize ?? 16));
  }

  /** Unnormalised image features [N, P] (get_image_features), batch by batch; `onBatch(done)` after each. */
  imageFeatures(images: readonly RgbImage[], where: string, onBatch?: (done: number) => void): Tensor {
    const parts: Tensor[] = [];
    try {
      for (let lo = 0; lo < images.length; lo += this.batchSize) {
        const batch = images.slice(lo, lo + this.batchSize).map((img, i) => {
          checkRgb(img, `${where}, image ${lo + i}`);
          return { width: img.width, height: img.height, channels: 3 as const, data: img.data };
        });
        const px = preprocessImages(batch, this.backbone.processor);
        parts.push(keep(noGrad(() => tidy(() => this.backbone.model.imageFeatures(tensor(px.data, px.shape))))));
        onBatch?.(Math.min(lo + this.batchSize, images.length));
      }
      return tidy(() => (parts.length === 1 ? parts[0]!.clone() : cat(parts, 0)));
    } finally {
      for (const p of parts) p.dispose();
    }
  }

  /** Unnormalised text features [N, P] (get_text_features) of the prompts, each distinct prompt encoded once. */
  textFeatures(prompts: readonly string[]): Tensor {
    const unique = [...new Set(prompts)];
    const maxLength = this.backbone.model.config.text.maxPositionEmbeddings;
    return noGrad(() => tidy(() => {
      const feats: Tensor[] = [];
      for (let lo = 0; lo < unique.length; lo += this.batchSize) {
        const enc = this.backbone.tokenizer.encodeBatch(unique.slice(lo, lo + this.batchSize), { maxLength, padding: "longest", truncation: true });
        feats.push(this.backbone.model.textFeatures(tensor(enc.flat!, enc.shape!)));
      }
      const all = feats.length === 1 ? feats[0]! : cat(feats, 0);
      const index = new Map(unique.map((p, i) => [p, i]));
      const rows = tensor(new BigInt64Array(prompts.map((p) => BigInt(index.get(p)!))), [prompts.length]);
      return all.indexSelect(0, rows);
    }));
  }

  /** cos(image_i, prompt_i) for each i. */
  async cosines(images: readonly RgbImage[], prompts: readonly string[], where: string, onBatch?: (done: number) => void): Promise<number[]> {
    if (images.length === 0) return [];
    const img = this.imageFeatures(images, where, onBatch);
    try {
      return tidy(() => {
        const txt = this.textFeatures(prompts);
        return l2normalize(img).mul(l2normalize(txt)).sum([1]).toArray() as number[];
      });
    } finally {
      img.dispose();
    }
  }

  dispose(): void {
    this.backbone.model.dispose();
  }
}

export type ClipRewardKind = "clip" | "pickscore" | "hpsv2";

const DESCRIPTIONS: Record<ClipRewardKind, string> = {
  clip: "CLIP score: 100 · cos(image, prompt) embeddings (torchmetrics CLIPScore, per sample)",
  pickscore: "PickScore: exp(logit_scale) · cos(image, prompt) of the PickScore CLIP",
  hpsv2: "HPS v2: cos(image, prompt) of the HPS v2 open_clip ViT-H-14",
};

/** A CLIP-based reward (see the file comment) over a loaded backbone. */
export function clipReward(kind: ClipRewardKind, scorer: ClipScorer, name: string = kind): RewardModel {
  const scale = kind === "clip" ? 100 : kind === "pickscore" ? scorer.backbone.model.logitScaleExp() : 1;
  const reward: RewardModel = {
    name,
    description: `${DESCRIPTIONS[kind]} — ${scorer.backbone.source}`,
    async score(images: readonly RgbImage[], prompts: readonly string[], opts: ScoreOptions = {}): Promise<number[]> {
      checkRewardInputs(reward, images, prompts);
      const total = images.length;
      const cos = await scorer.cosines(images, prompts, `reward "${name}"`, (done) => opts.onEvent?.({ type: "scored", reward: name, done, total }));
      return cos.map((c) => scale * c);
    },
    dispose: () => scorer.dispose(),
  };
  return reward;
}

/** Loads `clip`, `pickscore` or `hpsv2` from a path (folder or open_clip file). */
export function loadClipReward(kind: ClipRewardKind, path: string, opts: ClipBackboneOptions & ClipScorerOptions & { name?: string } = {}): RewardModel {
  const backbone = loadClipBackbone(path, kind === "hpsv2" ? { architecture: opts.architecture ?? "ViT-H-14" } : opts);
  return clipReward(kind, new ClipScorer(backbone, opts), opts.name ?? kind);
}
