// The "category" reward: log p(category | image) from the emoji category classifier
// (src/eval/emoji-classifier.ts), where the category is the prompt's emoji category. It measures
// "is this recognisably the right kind of emoji" — a reward independent of the alignment one, so
// a model tuned on alignment labels can be evaluated with it.
//
// The prompt's category: an emoji caption ends with its category ("grinning face, face smiling,
// smileys & emotion"); otherwise the prompt (or its part before the first comma) is looked up
// among the emoji names. Prompts that name no emoji are an error.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { EMOJI_CATEGORIES, listEmoji, uint8ToTensor } from "../datasets/emoji.js";
import { DEFAULT_CLASSIFIER_CONFIG, EmojiClassifier, type EmojiClassifierConfig } from "../eval/emoji-classifier.js";
import { readSafetensorsSync } from "../io/safetensors.js";
import type { RgbImage } from "../sample/generate.js";
import { noGrad, tensor, tidy } from "../tensor/index.js";
import { packResized } from "./images.js";
import { checkRewardInputs, type RewardModel } from "./reward.js";

let nameIndex: Map<string, number> | null = null;

/** Category id (index into EMOJI_CATEGORIES) of an emoji prompt, or null when it names none. */
export function promptCategory(prompt: string): number | null {
  const p = prompt.trim().toLowerCase();
  const parts = p.split(",").map((s) => s.trim());
  const last = parts[parts.length - 1]!;
  const byTail = EMOJI_CATEGORIES.findIndex((c) => c.toLowerCase() === last);
  if (byTail >= 0) return byTail;
  if (!nameIndex) {
    nameIndex = new Map();
    for (const it of listEmoji()) {
      nameIndex.set(it.caption, it.label);
      nameIndex.set(it.name, it.label);
    }
  }
  return nameIndex.get(p) ?? nameIndex.get(parts[0]!) ?? null;
}

/** Loads classifier weights: a .safetensors file, or a folder with model.safetensors (+ config.json). */
export function loadClassifierWeights(path: string): EmojiClassifier {
  let file = path;
  let config: EmojiClassifierConfig = DEFAULT_CLASSIFIER_CONFIG;
  if (!path.endsWith(".safetensors")) {
    const names = ["model.safetensors", "classifier.safetensors", "emoji-classifier.safetensors"];
    const found = names.map((n) => join(path, n)).find((p) => existsSync(p));
    if (!found) throw new Error(`${path}: no classifier weights (looked for ${names.join(", ")})`);
    file = found;
    const cfg = join(path, "config.json");
    if (existsSync(cfg)) {
      const raw = JSON.parse(readFileSync(cfg, "utf8")) as Record<string, unknown>;
      const channels = raw["channels"];
      const imageSize = raw["imageSize"] ?? raw["image_size"];
      config = {
        ...config,
        ...(Array.isArray(channels) ? { channels: channels as number[] } : {}),
        ...(typeof imageSize === "number" ? { imageSize } : {}),
      };
    }
  }
  if (!existsSync(file)) throw new Error(`${file}: classifier weights not found`);
  const model = new EmojiClassifier(config);
  const { tensors } = readSafetensorsSync(file);
  try {
    model.loadStateDict(tensors, { source: file });
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
  model.requiresGrad(false);
  model.eval();
  return model;
}

export function categoryReward(model: EmojiClassifier, name = "category"): RewardModel {
  const size = model.config.imageSize;
  const reward: RewardModel = {
    name,
    description: "log p(prompt's emoji category | image) under the emoji category classifier",
    async score(images: readonly RgbImage[], prompts: readonly string[]): Promise<number[]> {
      checkRewardInputs(reward, images, prompts);
      if (images.length === 0) return [];
      const labels = prompts.map((p, i) => {
        const c = promptCategory(p);
        if (c === null) throw new Error(`reward "${name}": prompt ${i} (${JSON.stringify(p)}) names no emoji category; this reward scores emoji prompts only`);
        return c;
      });
      const pixels = await packResized(images, size, `reward "${name}"`);
      return noGrad(() => tidy(() => {
        const logp = model.forward(uint8ToTensor(pixels, images.length, size)).logSoftmax(1);
        const idx = tensor(new BigInt64Array(labels.map((l) => BigInt(l))), [labels.length, 1]);
        return logp.gather(1, idx).toArray();
      }));
    },
    dispose: () => model.dispose(),
  };
  return reward;
}
