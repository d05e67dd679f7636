// A small convolutional classifier of emoji categories, trained on the real TRAIN emoji. It is the
// yardstick for the shipped base model: its accuracy on samples generated for held-out captions,
// next to its accuracy on the real held-out images of the same captions, says how recognisably
// "of the right kind" the generated emoji are.
//
// Architecture (32×32 RGB in [−1, 1]): conv3×3 → 3 stride-2 conv3×3 stages (32→16→8→4), each
// followed by GroupNorm and SiLU; global average pool; linear to the 9 categories. Training draws
// a category uniformly, then an emoji of it (class-balanced: People & Body has 60% of the images),
// with random horizontal flips and ±2-pixel shifts, and minimises cross-entropy with AdamW.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Rng } from "../data/random.js";
import { flipShiftImages } from "../datasets/augment.js";
import { EMOJI_CATEGORIES, type EmojiDataset, uint8ToTensor } from "../datasets/emoji.js";
import { Conv2d, GroupNorm, Linear, Module, ModuleList, setInitSeed } from "../nn/index.js";
import { loadStateDictFromSafetensors, writeSafetensorsSync } from "../io/safetensors.js";
import { AdamW } from "../optim/index.js";
import { noGrad, tensor, tidy, type Tensor } from "../tensor/index.js";

export interface EmojiClassifierConfig {
  channels: number[];
  numClasses: number;
  imageSize: number;
}

export const DEFAULT_CLASSIFIER_CONFIG: EmojiClassifierConfig = { channels: [32, 64, 96, 128], numClasses: EMOJI_CATEGORIES.length, imageSize: 32 };

export class EmojiClassifier extends Module {
  readonly convs: ModuleList<Conv2d>;
  readonly norms: ModuleList<GroupNorm>;
  readonly head: Linear;
  constructor(readonly config: EmojiClassifierConfig = DEFAULT_CLASSIFIER_CONFIG) {
    super();
    const ch = config.channels;
    this.convs = this.child("convs", new ModuleList<Conv2d>());
    this.norms = this.child("norms", new ModuleList<GroupNorm>());
    let prev = 3;
    ch.forEach((c, i) => {
      this.convs.push(new Conv2d(prev, c, 3, { padding: 1, stride: i === 0 ? 1 : 2 }));
      this.norms.push(new GroupNorm(8, c));
      prev = c;
    });
    this.head = this.child("head", new Linear(prev, config.numClasses));
  }
  /** Logits [B, numClasses] for images [B, 3, H, W] in [−1, 1]. */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (let i = 0; i < this.convs.length; i++) h = this.norms.at(i).forward(this.convs.at(i).forward(h)).silu();
      return this.head.forward(h.mean([2, 3]));
    });
  }
}

export type ClassifierEvent = { type: "step"; step: number; total: number; loss: number } | { type: "done"; seconds: number };

export interface TrainClassifierOptions {
  train: EmojiDataset;
  steps?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  onEvent?: (e: ClassifierEvent) => void;
}

/** Cross-entropy of logits [B, C] against integer labels. */
export function crossEntropy(logits: Tensor, labels: readonly number[]): Tensor {
  return tidy(() => {
    const idx = tensor(new BigInt64Array(labels.map((l) => BigInt(l))), [labels.length, 1]);
    return logits.logSoftmax(1).gather(1, idx).mean().neg();
  });
}

/** Trains a classifier on `train` (class-balanced batches). Deterministic for a seed. */
export function trainEmojiClassifier(opts: TrainClassifierOptions): EmojiClassifier {
  const steps = opts.steps ?? 1500;
  const batch = opts.batchSize ?? 64;
  const seed = opts.seed ?? 0;
  const ds = opts.train;
  const size = ds.size;
  const start = Date.now();
  setInitSeed(seed);
  const model = new EmojiClassifier({ ...DEFAULT_CLASSIFIER_CONFIG, imageSize: size });
  const opt = new AdamW(model.trainableParameters(), { lr: opts.lr ?? 2e-3, weightDecay: 1e-4 });
  const byClass: number[][] = EMOJI_CATEGORIES.map(() => []);
  ds.items.forEach((it, i) => byClass[it.label]!.push(i));
  const classes = byClass.map((l, c) => [c, l] as const).filter(([, l]) => l.length > 0);
  const rng = new Rng(seed);
  const per = size * size * 3;
  for (let step = 0; step < steps; step++) {
    // cosine decay to 0
    opt.lr = (opts.lr ?? 2e-3) * 0.5 * (1 + Math.cos((Math.PI * step) / steps));
    const labels: number[] = [];
    const pix = new Uint8Array(batch * per);
    for (let b = 0; b < batch; b++) {
      const [c, list] = classes[rng.int(0, classes.length)]!;
      const i = list[rng.int(0, list.length)]!;
      labels.push(c);
      pix.set(ds.pixels.subarray(i * per, (i + 1) * per), b * per);
    }
    flipShiftImages(pix, batch, size, rng, 2);
    const loss = tidy(() => {
      const l = crossEntropy(model.forward(uint8ToTensor(pix, batch, size)), labels);
      l.backward();
      return l.item();
    });
    opt.step();
    opt.zeroGrad();
    opts.onEvent?.({ type: "step", step: step + 1, total: steps, loss });
  }
  opt.dispose();
  model.eval();
  opts.onEvent?.({ type: "done", seconds: (Date.now() - start) / 1000 });
  return model;
}

/** Predicted class ids for Uint8 HWC images [count, size, size, 3]. */
export function classifyImages(model: EmojiClassifier, pixels: Uint8Array, count: number, size: number, batchSize = 256): number[] {
  const out: number[] = [];
  const per = size * size * 3;
  for (let s = 0; s < count; s += batchSize) {
    const n = Math.min(batchSize, count - s);
    const pred = noGrad(() => tidy(() => model.forward(uint8ToTensor(pixels.subarray(s * per, (s + n) * per), n, size)).argmax(1).toArray()));
    out.push(...pred);
  }
  return out;
}

export interface ClassifierReport {
  /** Fraction of images whose predicted category is the true one. */
  accuracy: number;
  /** Mean over categories of per-category accuracy (insensitive to category sizes). */
  balancedAccuracy: number;
  count: number;
  perCategory: Record<string, { correct: number; total: number }>;
  /** confusion[true][predicted] counts. */
  confusion: number[][];
}

export function scorePredictions(predicted: readonly number[], labels: readonly number[]): ClassifierReport {
  if (predicted.length !== labels.length) throw new Error(`${predicted.length} predictions for ${labels.length} labels`);
  const k = EMOJI_CATEGORIES.length;
  const confusion = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  let correct = 0;
  predicted.forEach((p, i) => {
    const l = labels[i]!;
    confusion[l]![p]!++;
    if (p === l) correct++;
  });
  const perCategory: ClassifierReport["perCategory"] = {};
  let sum = 0;
  let cats = 0;
  EMOJI_CATEGORIES.forEach((name, c) => {
    const total = confusion[c]!.reduce((a, b) => a + b, 0);
    const ok = confusion[c]![c]!;
    perCategory[name] = { correct: ok, total };
    if (total > 0) {
      sum += ok / total;
      cats++;
    }
  });
  return { accuracy: labels.length ? correct / labels.length : 0, balancedAccuracy: cats ? sum / cats : 0, count: labels.length, perCategory, confusion };
}

/** Accuracy of the classifier on a data set's images against their categories. */
export function evaluateClassifier(model: EmojiClassifier, ds: EmojiDataset): ClassifierReport {
  const pred = classifyImages(model, ds.pixels, ds.items.length, ds.size);
  return scorePredictions(pred, ds.items.map((i) => i.label));
}


// ---- saving and loading (models/emoji-classifier) ----------------------------------------------

/** The folder layout: config.json (architecture, class names, how it was trained) + model.safetensors. */
export interface EmojiClassifierFolderConfig extends EmojiClassifierConfig {
  /** Class names in the order of the logits (EMOJI_CATEGORIES). */
  classes: string[];
  /** Free-form facts about training and accuracy, stored as written. */
  training?: Record<string, unknown>;
}

/** Writes `model` to `dir` (config.json + model.safetensors). */
export function saveEmojiClassifier(dir: string, model: EmojiClassifier, training?: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true });
  const cfg: EmojiClassifierFolderConfig = { ...model.config, classes: [...EMOJI_CATEGORIES], ...(training ? { training } : {}) };
  writeSafetensorsSync(join(dir, "model.safetensors"), model.stateDict());
  writeFileSync(join(dir, "config.json"), JSON.stringify(cfg, null, 1) + "\n");
}

/**
 * Loads a classifier saved by `saveEmojiClassifier` (default: the shipped models/emoji-classifier),
 * in eval mode. Its logits score images [B, 3, 32, 32] in [−1, 1] against `config.classes`.
 */
export function loadEmojiClassifier(dir = "models/emoji-classifier"): { model: EmojiClassifier; config: EmojiClassifierFolderConfig } {
  const cfgPath = join(dir, "config.json");
  const weights = join(dir, "model.safetensors");
  if (!existsSync(cfgPath) || !existsSync(weights)) {
    throw new Error(`${dir} is not an emoji classifier folder: it needs config.json and model.safetensors (written by saveEmojiClassifier)`);
  }
  const config = JSON.parse(readFileSync(cfgPath, "utf8")) as EmojiClassifierFolderConfig;
  if (!Array.isArray(config.channels) || typeof config.numClasses !== "number" || typeof config.imageSize !== "number") {
    throw new Error(`${cfgPath}: expected "channels" (number[]), "numClasses" and "imageSize" (numbers)`);
  }
  const model = new EmojiClassifier({ channels: config.channels, numClasses: config.numClasses, imageSize: config.imageSize });
  loadStateDictFromSafetensors(model, weights);
  model.eval();
  return { model, config };
}
