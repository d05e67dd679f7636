// The reward-model contract shared by AI feedback (labelling pairs), evaluation (win rate,
// best-of-n) and the web app (scores beside images). A reward scores (image, prompt) pairs; a
// higher score means a better image for that prompt. Scores are only compared within one reward.
import type { RgbImage } from "../sample/generate.js";

export interface RewardModel {
  /** A short stable name used in reports, the store's ai-label rows and `--reward NAME`. */
  readonly name: string;
  /** One line for reports: what the score measures. */
  readonly description: string;
  /** Scores images[i] for prompts[i]; the two arrays have the same length. */
  score(images: readonly RgbImage[], prompts: readonly string[], opts?: ScoreOptions): Promise<number[]>;
  /** Frees native memory held by the model (weights); the reward is unusable afterwards. */
  dispose?(): void;
}

/** Progress of one score() call (rewards that work in batches report each batch). */
export interface RewardProgress {
  type: "scored";
  reward: string;
  /** Images scored so far in this call, of `total`. */
  done: number;
  total: number;
}

export interface ScoreOptions {
  onEvent?: (e: RewardProgress) => void;
}

/** Checks the contract's length rule with a message naming the reward. */
export function checkRewardInputs(reward: Pick<RewardModel, "name">, images: readonly RgbImage[], prompts: readonly string[]): void {
  if (images.length !== prompts.length) {
    throw new Error(`reward "${reward.name}": got ${images.length} images but ${prompts.length} prompts; pass one prompt per image`);
  }
}
