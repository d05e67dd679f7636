// The "alignment" reward: a small CLIP the project trains itself, contrastively, on (image,
// caption) pairs — our stand-in for CLIP score / PickScore.
//
//   image (32×32 RGB in [−1, 1]) → conv3×3 → 3 stride-2 conv3×3 stages (32→16→8→4), each with
//       GroupNorm + SiLU → global average pool → Linear → u ∈ R^D, normalised
//   caption → CLIP text transformer (CLIPTextModelWithProjection: pooled EOS state → text_projection)
//       → v ∈ R^D, normalised
//   score(image, prompt) = s · cos(u, v),   s = exp(logit_scale) (learned, clamped at 100)
//
// Training (CLIP's InfoNCE): a batch of N pairs gives logits L = s·U Vᵀ; the loss is the mean of
// the cross-entropies of L's rows and of its columns against the diagonal. Each batch holds N
// different base emoji (a base emoji's skin-tone variants would be false negatives), one random
// variant each, with random horizontal flips and ±2-pixel shifts (white fill); AdamW with cosine
// decay; the temperature gets no weight decay.
import { mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { Rng } from "../data/random.js";
import { EMOJI_CATEGORIES, uint8ToTensor, type EmojiDataset } from "../datasets/emoji.js";
import { flipShiftImages } from "../datasets/augment.js";
import { pruneClipTokenizer } from "../datasets/tokenizer.js";
import { emojiTextConfig } from "../datasets/emojiModel.js";
import { loadStateDictFromSafetensors, writeSafetensorsSync } from "../io/safetensors.js";
import { ClipTextModel, clipTextConfigFromJson, clipTextConfigToJson, type ClipTextConfig } from "../models/clip/text-model.js";
import { ClipTokenizer } from "../models/clip/tokenizer.js";
import { Conv2d, GroupNorm, Linear, Module, ModuleList, setInitSeed } from "../nn/index.js";
import { AdamW } from "../optim/index.js";
import type { RgbImage } from "../sample/generate.js";
import { arange, noGrad, scalar, tensor, tidy, type Tensor } from "../tensor/index.js";
import { packResized } from "./images.js";
import { checkRewardInputs, type RewardModel } from "./reward.js";

export const ALIGNMENT_ARCHITECTURE = "diffusion-dpo/alignment-reward";
export const ALIGNMENT_CONFIG_FILE = "config.json";
export const ALIGNMENT_WEIGHTS_FILE = "model.safetensors";
/** The temperature's ceiling, as CLIP: s = exp(logit_scale) ≤ 100. */
export const MAX_LOGIT_SCALE = Math.log(100);

export interface AlignmentConfig {
  imageSize: number;
  /** Channels of the stem and the three stride-2 stages. */
  channels: number[];
  embedDim: number;
  text: ClipTextConfig;
}

export class ImageTower extends Module {
  readonly convs: ModuleList<Conv2d>;
  readonly norms: ModuleList<GroupNorm>;
  readonly proj: Linear;
  constructor(channels: number[], embedDim: number) {
    super();
    this.convs = this.child("convs", new ModuleList<Conv2d>());
    this.norms = this.child("norms", new ModuleList<GroupNorm>());
    let prev = 3;
    channels.forEach((c, i) => {
      this.convs.push(new Conv2d(prev, c, 3, { padding: 1, stride: i === 0 ? 1 : 2 }));
      this.norms.push(new GroupNorm(8, c));
      prev = c;
    });
    this.proj = this.child("proj", new Linear(prev, embedDim));
  }
  forward(x: Tensor): Tensor {
    let h = x;
    for (let i = 0; i < this.convs.length; i++) h = this.norms.at(i).forward(this.convs.at(i).forward(h)).silu();
    return this.proj.forward(h.mean([2, 3]));
  }
}

function normalize(x: Tensor): Tensor {
  return x.div(x.norm([1], true).clamp(1e-6));
}

export class AlignmentModel extends Module {
  readonly image_tower: ImageTower;
  readonly text_tower: ClipTextModel;
  readonly logit_scale: Tensor;
  constructor(readonly config: AlignmentConfig, readonly tokenizer: ClipTokenizer) {
    super();
    if (config.text.projectionDim !== config.embedDim) throw new Error(`alignment config: text.projectionDim ${config.text.projectionDim} must equal embedDim ${config.embedDim}`);
    this.image_tower = this.child("image_tower", new ImageTower(config.channels, config.embedDim));
    this.text_tower = this.child("text_tower", new ClipTextModel(config.text, { withProjection: true }));
    this.logit_scale = this.param("logit_scale", scalar(Math.log(1 / 0.07)));
  }

  /** Normalised image embeddings [N, D] of images [N, 3, S, S] in [−1, 1]. */
  encodeImages(x: Tensor): Tensor {
    return tidy(() => normalize(this.image_tower.forward(x)));
  }

  /** Normalised caption embeddings [N, D]. */
  encodeTexts(texts: readonly string[]): Tensor {
    return tidy(() => {
      const enc = this.tokenizer.encodeBatch([...texts], { maxLength: this.config.text.maxPositionEmbeddings });
      const ids = tensor(enc.flat!, enc.shape!);
      return normalize(this.text_tower.forward(ids).textEmbeds!);
    });
  }

  /** s = exp(logit_scale), clamped at 100. */
  scale(): Tensor {
    return this.logit_scale.clamp(null, MAX_LOGIT_SCALE).exp();
  }

  /** InfoNCE over a batch of matching (image, caption) pairs. */
  loss(x: Tensor, captions: readonly string[]): Tensor {
    return tidy(() => {
      const u = this.encodeImages(x);
      const v = this.encodeTexts(captions);
      const logits = u.matmul(v.transpose(0, 1)).mul(this.scale());
      const target = arange(0, captions.length).to("i64").reshape([captions.length, 1]);
      const rows = logits.logSoftmax(1).gather(1, target).mean().neg();
      const cols = logits.transpose(0, 1).logSoftmax(1).gather(1, target).mean().neg();
      return rows.add(cols).div(2);
    });
  }

  /** Scores s·cos(u_i, v_i) for Uint8 HWC images at the model's size. */
  scorePixels(pixels: Uint8Array, captions: readonly string[], batchSize = 256): number[] {
    const size = this.config.imageSize;
    const per = size * size * 3;
    const out: number[] = [];
    noGrad(() => {
      for (let s = 0; s < captions.length; s += batchSize) {
        const n = Math.min(batchSize, captions.length - s);
        const part = tidy(() => {
          const u = this.encodeImages(uint8ToTensor(pixels.subarray(s * per, (s + n) * per), n, size));
          const v = this.encodeTexts(captions.slice(s, s + n));
          return u.mul(v).sum([1]).mul(this.scale()).toArray();
        });
        out.push(...part);
      }
    });
    return out;
  }
}

export const DEFAULT_ALIGNMENT_CHANNELS = [32, 64, 128, 128];
export const DEFAULT_EMBED_DIM = 128;

/** A fresh model whose tokenizer is CLIP's BPE pruned to `captions`. */
export function createAlignmentModel(captions: readonly string[], opts: { seed?: number; embedDim?: number; channels?: number[]; imageSize?: number; textWidth?: number; textLayers?: number } = {}): AlignmentModel {
  const tokenizer = pruneClipTokenizer(captions, { modelMaxLength: 32 });
  const embedDim = opts.embedDim ?? DEFAULT_EMBED_DIM;
  const width = opts.textWidth ?? 64;
  const text: ClipTextConfig = {
    ...emojiTextConfig(tokenizer),
    hiddenSize: width,
    intermediateSize: 2 * width,
    numHiddenLayers: opts.textLayers ?? 2,
    numAttentionHeads: 4,
    projectionDim: embedDim,
  };
  setInitSeed(opts.seed ?? 0);
  return new AlignmentModel({ imageSize: opts.imageSize ?? 32, channels: opts.channels ?? DEFAULT_ALIGNMENT_CHANNELS, embedDim, text }, tokenizer);
}

export type AlignmentTrainEvent =
  | { type: "step"; step: number; total: number; loss: number; scale: number }
  | { type: "done"; seconds: number };

export interface TrainAlignmentOptions {
  train: EmojiDataset;
  steps?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  /** Max shift in pixels of the augmentation (default 2). */
  shift?: number;
  /** Architecture overrides (tests use tiny ones). */
  model?: Parameters<typeof createAlignmentModel>[1];
  onEvent?: (e: AlignmentTrainEvent) => void;
}

/** Trains the alignment model on a data set's (image, caption) pairs. Deterministic for a seed. */
export function trainAlignment(opts: TrainAlignmentOptions): AlignmentModel {
  const steps = opts.steps ?? 1200;
  const ds = opts.train;
  const seed = opts.seed ?? 0;
  const lr = opts.lr ?? 2e-3;
  const start = Date.now();
  if (ds.items.length < 2) throw new Error("reward train: the data set needs at least 2 (image, caption) pairs");
  const model = createAlignmentModel(ds.items.map((i) => i.caption), { seed, imageSize: ds.size, ...opts.model });
  model.train();
  const params = model.trainableParameters();
  const opt = new AdamW(params.filter(([n]) => n !== "logit_scale"), { lr, weightDecay: 1e-2 });
  const optScale = new AdamW(params.filter(([n]) => n === "logit_scale"), { lr, weightDecay: 0 });
  // group the items by base emoji: a batch holds distinct bases
  const groups = new Map<string, number[]>();
  ds.items.forEach((it, i) => {
    const g = groups.get(it.baseName);
    if (g) g.push(i);
    else groups.set(it.baseName, [i]);
  });
  const bases = [...groups.values()];
  const batch = Math.min(opts.batchSize ?? 128, bases.length);
  const rng = new Rng(seed);
  const size = ds.size;
  const per = size * size * 3;
  const order = bases.map((_, i) => i);
  let cursor = order.length;
  for (let step = 0; step < steps; step++) {
    const f = 0.5 * (1 + Math.cos((Math.PI * step) / steps));
    const warm = Math.min(1, (step + 1) / 50);
    opt.lr = optScale.lr = lr * f * warm;
    const pix = new Uint8Array(batch * per);
    const captions: string[] = [];
    for (let b = 0; b < batch; b++) {
      if (cursor >= order.length) {
        // reshuffle (Fisher–Yates): each epoch sees every base emoji once
        for (let i = order.length - 1; i > 0; i--) {
          const j = rng.int(0, i + 1);
          [order[i], order[j]] = [order[j]!, order[i]!];
        }
        cursor = 0;
      }
      const group = bases[order[cursor++]!]!;
      const i = group[rng.int(0, group.length)]!;
      captions.push(ds.items[i]!.caption);
      pix.set(ds.pixels.subarray(i * per, (i + 1) * per), b * per);
    }
    // a batch that straddles a reshuffle may hold one base twice; rare and harmless
    flipShiftImages(pix, batch, size, rng, opts.shift ?? 2);
    const loss = tidy(() => {
      const l = model.loss(uint8ToTensor(pix, batch, size), captions);
      l.backward();
      return l.item();
    });
    opt.step();
    optScale.step();
    opt.zeroGrad();
    optScale.zeroGrad();
    opts.onEvent?.({ type: "step", step: step + 1, total: steps, loss, scale: noGrad(() => tidy(() => model.scale().item())) });
  }
  opt.dispose();
  optScale.dispose();
  model.eval();
  opts.onEvent?.({ type: "done", seconds: (Date.now() - start) / 1000 });
  return model;
}

export interface AlignmentAccuracy {
  /** Fraction of images whose true caption scores above a random caption of another base emoji. */
  randomWrong: number;
  /** The same against a caption of another base emoji of the same category. */
  sameCategoryWrong: number;
  count: number;
}

/**
 * How often the true caption beats a wrong one, on a data set (the held-out split). For each
 * image, one wrong caption is drawn from another base emoji (any category), and one from another
 * base emoji of the same category (images whose category has no other base are skipped there).
 */
export function alignmentAccuracy(model: AlignmentModel, ds: EmojiDataset, seed = 0): AlignmentAccuracy {
  const rng = new Rng(seed);
  const n = ds.items.length;
  const byCat: number[][] = EMOJI_CATEGORIES.map(() => []);
  ds.items.forEach((it, i) => byCat[it.label]!.push(i));
  const randomIdx: number[] = [];
  const sameIdx: (number | null)[] = [];
  for (let i = 0; i < n; i++) {
    const it = ds.items[i]!;
    let j: number;
    do j = rng.int(0, n); while (ds.items[j]!.baseName === it.baseName && n > 1);
    randomIdx.push(j);
    const cands = byCat[it.label]!.filter((k) => ds.items[k]!.baseName !== it.baseName);
    sameIdx.push(cands.length ? cands[rng.int(0, cands.length)]! : null);
  }
  const captions = ds.items.map((it) => it.caption);
  const truth = model.scorePixels(ds.pixels, captions);
  const wrong = model.scorePixels(ds.pixels, randomIdx.map((j) => captions[j]!));
  const sameList = sameIdx.map((j, i) => [i, j] as const).filter((x): x is readonly [number, number] => x[1] !== null);
  const per = ds.size * ds.size * 3;
  const samePix = new Uint8Array(sameList.length * per);
  sameList.forEach(([i], k) => samePix.set(ds.pixels.subarray(i * per, (i + 1) * per), k * per));
  const same = model.scorePixels(samePix, sameList.map(([, j]) => captions[j]!));
  let r = 0;
  truth.forEach((t, i) => { if (t > wrong[i]!) r++; });
  let s = 0;
  sameList.forEach(([i], k) => { if (truth[i]! > same[k]!) s++; });
  return { randomWrong: r / n, sameCategoryWrong: sameList.length ? s / sameList.length : 0, count: n };
}

/** Writes a reward folder: config.json, model.safetensors, tokenizer/. */
export function saveAlignmentModel(dir: string, model: AlignmentModel, extra: Record<string, unknown> = {}): void {
  mkdirSync(dir, { recursive: true });
  const c = model.config;
  const config = {
    architecture: ALIGNMENT_ARCHITECTURE,
    image_size: c.imageSize,
    channels: c.channels,
    embed_dim: c.embedDim,
    text_config: clipTextConfigToJson(c.text, true),
    ...extra,
  };
  writeFileSync(join(dir, ALIGNMENT_CONFIG_FILE), JSON.stringify(config, null, 2) + "\n");
  writeSafetensorsSync(join(dir, ALIGNMENT_WEIGHTS_FILE), model.stateDict(), { architecture: ALIGNMENT_ARCHITECTURE });
  model.tokenizer.saveFolder(join(dir, "tokenizer"));
}

/** True when `dir` holds a reward folder written by `saveAlignmentModel`. */
export function isAlignmentFolder(dir: string): boolean {
  const p = join(dir, ALIGNMENT_CONFIG_FILE);
  if (!existsSync(p)) return false;
  try {
    return (JSON.parse(readFileSync(p, "utf8")) as { architecture?: unknown }).architecture === ALIGNMENT_ARCHITECTURE;
  } catch {
    return false;
  }
}

/** Loads a reward folder written by `saveAlignmentModel` (`reward train`). */
export function loadAlignmentModel(dir: string): AlignmentModel {
  const cfgPath = join(dir, ALIGNMENT_CONFIG_FILE);
  if (!existsSync(cfgPath)) throw new Error(`${dir}: not a reward folder (no ${ALIGNMENT_CONFIG_FILE}); write one with \`diffusion-dpo reward train --out ${dir}\``);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  if (raw["architecture"] !== ALIGNMENT_ARCHITECTURE) {
    throw new Error(`${cfgPath}: architecture is ${JSON.stringify(raw["architecture"])}, expected "${ALIGNMENT_ARCHITECTURE}" (a folder written by \`diffusion-dpo reward train\`)`);
  }
  const int = (k: string): number => {
    const v = raw[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) throw new Error(`${cfgPath}: "${k}" must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const channels = raw["channels"];
  if (!Array.isArray(channels) || channels.length === 0 || !channels.every((c) => Number.isInteger(c) && c > 0 && c % 8 === 0)) {
    throw new Error(`${cfgPath}: "channels" must be a non-empty list of positive multiples of 8, got ${JSON.stringify(channels)}`);
  }
  const text = clipTextConfigFromJson(raw["text_config"], `${cfgPath} text_config`);
  const tokenizer = ClipTokenizer.fromFolder(join(dir, "tokenizer"), { modelMaxLength: text.maxPositionEmbeddings });
  const model = new AlignmentModel({ imageSize: int("image_size"), channels: channels as number[], embedDim: int("embed_dim"), text }, tokenizer);
  const weights = join(dir, ALIGNMENT_WEIGHTS_FILE);
  if (!existsSync(weights)) throw new Error(`${dir}: ${ALIGNMENT_WEIGHTS_FILE} is missing`);
  loadStateDictFromSafetensors(model, weights);
  model.requiresGrad(false);
  model.eval();
  return model;
}

/** The model as a RewardModel; images of any size are resized to the model's input. */
export function alignmentReward(model: AlignmentModel, name = "alignment"): RewardModel {
  const reward: RewardModel = {
    name,
    description: `image–caption alignment: s·cos(image, caption) of a small CLIP trained on emoji (s = ${noGrad(() => tidy(() => model.scale().item())).toFixed(1)})`,
    async score(images: readonly RgbImage[], prompts: readonly string[]): Promise<number[]> {
      checkRewardInputs(reward, images, prompts);
      if (images.length === 0) return [];
      const pixels = await packResized(images, model.config.imageSize, `reward "${name}"`);
      return model.scorePixels(pixels, prompts);
    },
    dispose: () => model.dispose(),
  };
  return reward;
}
