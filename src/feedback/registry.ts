// Rewards by name or folder: `--reward alignment|appeal|category|path/to/dir`.
//   alignment  the shipped image–caption scorer, models/emoji-reward (`reward train` wrote it)
//   appeal     image statistics (no weights)
//   category   the emoji category classifier's log-probability of the prompt's category
//              (models/emoji-classifier, or runs/emoji-classifier.safetensors when that is absent)
//   a folder   written by `diffusion-dpo reward train` (our alignment architecture), or a folder
//              holding emoji-classifier weights; the reward is named after the folder.
//   clip=PATH, pickscore=PATH, hpsv2=PATH, aesthetic=PATH   the paper's scorers (src/feedback/scorers.ts);
//              weighted mixes 0.7*pickscore=PATH+0.3*aesthetic=PATH (grammar: src/feedback/spec.ts).
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { alignmentReward, isAlignmentFolder, loadAlignmentModel } from "./alignment.js";
import { appealReward } from "./appeal.js";
import { categoryReward, loadClassifierWeights } from "./category.js";
import type { RewardModel } from "./reward.js";
import { mixReward, type WeightedReward } from "./mix.js";
import { isScorerReward, loadScorerReward, SCORER_REWARDS } from "./scorers.js";
import { parseRewardSpec, rewardSpecName, type RewardTerm } from "./spec.js";

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

/** Loads a reward by built-in name, folder path or spec (see the file comment). */
export function loadReward(spec: string): RewardModel {
  if (!(BUILTIN_REWARDS as readonly string[]).includes(spec) && !existsSync(resolve(spec))) return loadRewardSpec(spec);
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

/** A parsed spec: one term as itself, several (or a weighted one) as a mix. */
function loadRewardSpec(spec: string): RewardModel {
  const terms = parseRewardSpec(spec);
  const loaded: WeightedReward[] = [];
  try {
    for (const t of terms) loaded.push({ reward: loadRewardTerm(t, spec), weight: t.weight ?? 1 });
  } catch (err) {
    for (const l of loaded) l.reward.dispose?.();
    throw err;
  }
  if (terms.length === 1 && terms[0]!.weight === undefined) return loaded[0]!.reward;
  return mixReward(loaded, rewardSpecName(terms));
}

function loadRewardTerm(t: RewardTerm, spec: string): RewardModel {
  if (isScorerReward(t.name)) return loadScorerReward(t.name, t.path);
  if (t.path === undefined) {
    if ((BUILTIN_REWARDS as readonly string[]).includes(t.name)) return loadReward(t.name);
  } else if (t.name === "alignment") {
    return alignmentReward(loadAlignmentModel(resolve(t.path)), "alignment");
  } else if (t.name === "category") {
    return categoryReward(loadClassifierWeights(resolve(t.path)), "category");
  } else if (t.name === "appeal") {
    throw new Error(`--reward ${spec}: appeal takes no weights (drop "=${t.path}")`);
  }
  throw new Error(`unknown reward "${t.path === undefined ? spec : t.name}": give one of ${BUILTIN_REWARDS.join(", ")}, ${SCORER_REWARDS.map((n) => `${n}=PATH`).join(", ")}, a weighted mix (0.7*pickscore=PATH+0.3*aesthetic=PATH), or a folder written by \`diffusion-dpo reward train\``);
}
