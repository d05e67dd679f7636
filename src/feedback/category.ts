// The "category" reward: log p(category | image) from the emoji category classifier
// (src/feedback/emoji-classifier.ts), where the category is the prompt's emoji category. It measures
// "is this recognisably the right kind of emoji" — a reward independent of the alignment one, so
// a model tuned on alignment labels can be evaluated with it.
//
// The prompt's category: an emoji caption ends with its category ("grinning face, face smiling,
// smileys & emotion"); otherwise the prompt (or its part before the first comma) is looked up
// among the emoji names. Prompts that name no emoji are an error.
import { existsSync } from "node:fs";
import { EMOJI_CATEGORIES, listEmoji, uint8ToTensor } from "../datasets/emoji.js";
import { DEFAULT_CLASSIFIER_CONFIG, EmojiClassifier, loadEmojiClassifier } from "./emoji-classifier.js";
import { loadStateDictFromSafetensors } from "../io/safetensors.js";
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

/**
 * Loads the classifier: a folder written by saveEmojiClassifier (config.json + model.safetensors,
 * e.g. models/emoji-classifier), or a bare .safetensors file of the default architecture.
 */
export function loadClassifierWeights(path: string): EmojiClassifier {
  if (!path.endsWith(".safetensors")) {
    const { model, config } = loadEmojiClassifier(path);
    const classes = config.classes ?? [...EMOJI_CATEGORIES];
    if (classes.length !== EMOJI_CATEGORIES.length || classes.some((c, i) => c !== EMOJI_CATEGORIES[i])) {
      model.dispose();
      throw new Error(`${path}: the classifier's classes (${classes.join(", ")}) are not the emoji categories in order; the category reward needs ${EMOJI_CATEGORIES.join(", ")}`);
    }
    model.requiresGrad(false);
    return model;
  }
  if (!existsSync(path)) throw new Error(`${path}: classifier weights not found`);
  const model = new EmojiClassifier(DEFAULT_CLASSIFIER_CONFIG);
  loadStateDictFromSafetensors(model, path);
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
