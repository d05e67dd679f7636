// A weighted mix of rewards: score = Σ wₖ · scoreₖ(image, prompt), each reward in its own units
// (`--reward 0.7*pickscore=/a+0.3*aesthetic=/b`; grammar in src/feedback/spec.ts). Scores are
// computed reward after reward over the whole call; progress events count images across them.
import type { RgbImage } from "../sample/generate.js";
import { checkRewardInputs, type RewardModel, type ScoreOptions } from "./reward.js";

export interface WeightedReward {
  reward: RewardModel;
  weight: number;
}

export function mixReward(parts: readonly WeightedReward[], name?: string): RewardModel {
  if (parts.length === 0) throw new Error("mixReward: needs at least one reward");
  for (const p of parts) if (!Number.isFinite(p.weight)) throw new Error(`mixReward: weight of "${p.reward.name}" is ${p.weight}`);
  const mixName = name ?? parts.map((p) => `${p.weight}*${p.reward.name}`).join("+");
  const reward: RewardModel = {
    name: mixName,
    description: `weighted sum: ${parts.map((p) => `${p.weight} × ${p.reward.name} (${p.reward.description})`).join(" + ")}`,
    async score(images: readonly RgbImage[], prompts: readonly string[], opts: ScoreOptions = {}): Promise<number[]> {
      checkRewardInputs(reward, images, prompts);
      const total = images.length * parts.length;
      const sum = new Array<number>(images.length).fill(0);
      for (const [k, p] of parts.entries()) {
        const s = await p.reward.score(images, prompts, {
          onEvent: (e) => opts.onEvent?.({ type: "scored", reward: mixName, done: k * images.length + e.done, total }),
        });
        if (s.length !== images.length) throw new Error(`reward "${p.reward.name}" returned ${s.length} scores for ${images.length} images`);
        s.forEach((v, i) => { sum[i] = sum[i]! + p.weight * v; });
        opts.onEvent?.({ type: "scored", reward: mixName, done: (k + 1) * images.length, total });
      }
      return sum;
    },
    dispose: () => { for (const p of parts) p.reward.dispose?.(); },
  };
  return reward;
}
