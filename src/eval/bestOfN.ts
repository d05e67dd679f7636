// Best-of-n baseline (the paper's rejection-sampling comparison, §6): how many base-model samples,
// picked by the reward, does it take to beat a plain base sample as often as the tuned model does?
//
// Per prompt: a reference base sample (the evaluation's first seed, the very image the tuned model
// was compared with) and `maxN` further base samples from other seeds (candidates). For
// n = 1, 2, 4, …, maxN, the best of the first n candidates by the reward is compared with the
// reference by the same reward (ties within the tie margin), giving a win rate per n with the same
// bootstrap over prompts as the main win rate. n = 1 is a base-vs-base coin flip (≈ ½).
// matchN = the smallest n whose win rate reaches the tuned model's; null when none does.
//
// Judge and selector are the same reward, which favours best-of-n (it optimises the judge
// directly); with several rewards each gets its own curve.
import { winRate, type WinRate, type WinRateOptions } from "./stats.js";

export interface BestOfNPoint {
  n: number;
  winRate: WinRate;
}

export interface BestOfNResult {
  points: BestOfNPoint[];
  /** The tuned model's win rate it is compared against. */
  tunedWinRate: number;
  matchN: number | null;
}

/** 1, 2, 4, … up to maxN (maxN included even when not a power of two). */
export function bestOfNSizes(maxN: number): number[] {
  if (!Number.isInteger(maxN) || maxN < 1) throw new Error(`best-of-n: the largest n must be a positive integer, got ${maxN}`);
  const out: number[] = [];
  for (let n = 1; n <= maxN; n *= 2) out.push(n);
  if (out[out.length - 1] !== maxN) out.push(maxN);
  return out;
}

/**
 * `reference[p]` = the reward of prompt p's reference base sample; `candidates[p]` = the rewards of
 * its candidate base samples, in seed order (at least maxN each).
 */
export function bestOfN(
  reference: readonly number[],
  candidates: readonly (readonly number[])[],
  tunedWinRate: number,
  maxN: number,
  opts: WinRateOptions = {},
): BestOfNResult {
  if (reference.length !== candidates.length) throw new Error(`best-of-n: ${reference.length} reference scores for ${candidates.length} prompts`);
  const points = bestOfNSizes(maxN).map((n) => {
    const samples = reference.map((ref, p) => {
      const c = candidates[p]!;
      if (c.length < n) throw new Error(`best-of-n: prompt ${p} has ${c.length} candidate scores, fewer than n = ${n}`);
      let best = -Infinity;
      for (let i = 0; i < n; i++) best = Math.max(best, c[i]!);
      return { prompt: p, delta: best - ref };
    });
    return { n, winRate: winRate(samples, opts) };
  });
  const hit = points.find((pt) => pt.winRate.rate >= tunedWinRate);
  return { points, tunedWinRate, matchN: hit?.n ?? null };
}
