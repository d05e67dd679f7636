// Rewards by name or folder: `--reward alignment|appeal|category|path/to/dir`.
//   alignment  the shipped image–caption scorer, models/emoji-reward (`reward train` wrote it)
//   appeal     image statistics (no weights)
//   category   the emoji category classifier's log-probability of the prompt's category
//              (models/emoji-classifier, or runs/emoji-classifier.safetensors when that is absent)
//   a folder   written by `diffusion-dpo reward train` (our alignment architecture), or a folder
//              holding emoji-classifier weights; the reward is named after the folder.
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { alignmentReward, isAlignmentFolder, loadAlignmentModel } from "./alignment.js";
import { appealReward } from "./appeal.js";
import { categoryReward, loadClassifierWeights } from "./category.js";
import type { RewardModel } from "./reward.js";

export const BUILTIN_REWARDS = ["alignment", "appeal", "category"] as const;
export type BuiltinReward = (typeof BUILTIN_REWARDS)[number];

/** The package's root folder (the one whose package.json is named diffusion-dpo). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 10; i++) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "diffusion-dpo") return dir;
      } catch {
        // not ours; keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error(`cannot find the diffusion-dpo package root above ${fileURLToPath(import.meta.url)}`);
}

/** Where the shipped alignment reward lives. */
export function defaultAlignmentDir(): string {
  return join(packageRoot(), "models", "emoji-reward");
}

/** The category classifier's weights: models/emoji-classifier, else runs/emoji-classifier.safetensors. */
export function defaultClassifierPath(): string {
  const root = packageRoot();
  const shipped = join(root, "models", "emoji-classifier");
  if (existsSync(shipped)) return shipped;
  const run = join(root, "runs", "emoji-classifier.safetensors");
  if (existsSync(run)) return run;
  throw new Error(`the category reward needs classifier weights in ${shipped} (or ${run}); train them with scripts/eval-emoji-base.ts`);
}

/** Loads a reward by built-in name or folder path (see the file comment). */
export function loadReward(spec: string): RewardModel {
  switch (spec) {
    case "appeal":
      return appealReward();
    case "alignment": {
      const dir = defaultAlignmentDir();
      if (!isAlignmentFolder(dir)) throw new Error(`the alignment reward's weights are missing from ${dir}; run \`diffusion-dpo reward train --out ${dir}\``);
      return alignmentReward(loadAlignmentModel(dir), "alignment");
    }
    case "category":
      return categoryReward(loadClassifierWeights(defaultClassifierPath()), "category");
    default:
      break;
  }
  const path = resolve(spec);
  if (!existsSync(path)) {
    throw new Error(`unknown reward "${spec}": give one of ${BUILTIN_REWARDS.join(", ")}, or a folder written by \`diffusion-dpo reward train\``);
  }
  const name = basename(path).replace(/\.safetensors$/, "");
  if (statSync(path).isDirectory()) {
    if (isAlignmentFolder(path)) return alignmentReward(loadAlignmentModel(path), name);
    if (!existsSync(join(path, "config.json")) || !existsSync(join(path, "model.safetensors"))) {
      throw new Error(`${spec}: not a reward folder (it needs config.json and model.safetensors, as \`diffusion-dpo reward train\` or saveEmojiClassifier write them)`);
    }
  }
  return categoryReward(loadClassifierWeights(path), name);
}
