// The paper's scorers by name, each from weights the user gives (`--reward NAME=PATH`):
//   clip       a transformers CLIPModel folder (e.g. openai/clip-vit-large-patch14), or open_clip safetensors
//   pickscore  the PickScore_v1 CLIPModel folder (its processor files inside, else CLIP's defaults)
//   hpsv2      HPS v2's open_clip ViT-H-14 checkpoint: HPS_v2_compressed.pt or .safetensors (file or folder)
//   aesthetic  a folder with the LAION aesthetic MLP (.safetensors or .pth) and its CLIP ViT-L/14 in clip/
import { loadAestheticReward } from "./aesthetic.js";
import { loadClipReward } from "./clip-rewards.js";
import type { RewardModel } from "./reward.js";

export const SCORER_REWARDS = ["clip", "pickscore", "hpsv2", "aesthetic"] as const;
export type ScorerReward = (typeof SCORER_REWARDS)[number];

const WHAT: Record<ScorerReward, string> = {
  clip: "a transformers CLIPModel folder (config.json + model.safetensors) or an open_clip .safetensors",
  pickscore: "the PickScore_v1 folder (config.json + model.safetensors; preprocessor_config.json and tokenizer files optional)",
  hpsv2: "HPS v2's open_clip ViT-H-14 checkpoint (HPS_v2_compressed.pt, or its state dict as .safetensors)",
  aesthetic: "a folder with the MLP (aesthetic_mlp.safetensors or .pth, keys layers.{0,2,4,6,7}.{weight,bias}) and the CLIP ViT-L/14 folder in clip/",
};

export function isScorerReward(name: string): name is ScorerReward {
  return (SCORER_REWARDS as readonly string[]).includes(name);
}

export interface ScorerOptions {
  /** Images per forward pass (default 16). */
  batchSize?: number;
}

/** Loads a scorer from its weights; a missing path is an error saying what to give. */
export function loadScorerReward(name: ScorerReward, path: string | undefined, opts: ScorerOptions = {}): RewardModel {
  if (path === undefined || path === "") {
    throw new Error(`the ${name} reward needs its weights on disk (nothing is downloaded): --reward ${name}=PATH, PATH = ${WHAT[name]}`);
  }
  try {
    return name === "aesthetic" ? loadAestheticReward(path, opts) : loadClipReward(name, path, opts);
  } catch (err) {
    throw new Error(`--reward ${name}=${path}: ${(err as Error).message}`);
  }
}
