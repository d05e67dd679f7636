// Win-rate arithmetic: outcomes with explicit ties, the tie-inclusive win rate, and its intervals.
//
// For each (prompt, seed) the judge (a reward) scores the tuned and the base image;
// Δ = score(tuned) − score(base):
//
//   win  if Δ >  tieMargin,   loss if Δ < −tieMargin,   tie if |Δ| ≤ tieMargin
//   winRate  = (wins + ½·ties) / n                      (n = all compared samples)
//   decisive = wins / (wins + losses)                   (ties left out)
//
// Two 95% intervals, because the two rates need different tools:
// - `decisive` gets the Wilson score interval (Wilson 1927): the binomial interval that stays
//   inside [0, 1] and behaves at small n and at rates near 0 or 1, unlike p ± 1.96·√(p(1−p)/n).
//   It assumes independent trials, which holds for one seed per prompt.
// - `winRate` is not a binomial proportion (a tie counts ½), and several seeds of one prompt are
//   not independent, so it gets a percentile bootstrap over PROMPTS: resample the prompts with
//   replacement (all seeds of a drawn prompt come along), recompute the rate, take the 2.5% and
//   97.5% quantiles (numpy's default linear interpolation) of B replicates. Seeded: the same
//   inputs give the same interval.
import { Rng } from "../data/random.js";

/** z for a two-sided 95% interval: Φ⁻¹(0.975). */
export const Z95 = 1.959963984540054;

export type Outcome = "win" | "loss" | "tie";

/** Classifies Δ = tuned − base with the tie margin (|Δ| ≤ margin is a tie). */
export function outcomeOf(delta: number, tieMargin: number): Outcome {
  if (!Number.isFinite(delta)) throw new Error(`win rate: a score difference is ${delta}; the reward returned a non-finite score`);
  if (delta > tieMargin) return "win";
  if (delta < -tieMargin) return "loss";
  return "tie";
}

/**
 * Wilson score interval for k successes in n trials:
 *   centre = (p̂ + z²/2n) / (1 + z²/n),  half = z/(1 + z²/n) · √(p̂(1−p̂)/n + z²/4n²).
 * n = 0 gives [0, 1] (nothing is known).
 */
export function wilsonInterval(k: number, n: number, z = Z95): [number, number] {
  if (!Number.isInteger(k) || !Number.isInteger(n) || k < 0 || n < 0 || k > n) {
    throw new Error(`wilsonInterval: need integers 0 ≤ k ≤ n, got k = ${k}, n = ${n}`);
  }
  if (n === 0) return [0, 1];
  const p = k / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (z / denom) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

/** The q-quantile of sorted values with linear interpolation between order statistics (numpy's default). */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const pos = (n - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(n - 1, lo + 1);
  const f = pos - lo;
  return sorted[lo]! + f * (sorted[hi]! - sorted[lo]!);
}

/** One compared sample: its prompt (the bootstrap's cluster) and Δ = tuned − base. */
export interface ComparedSample {
  /** Index of the prompt (samples with the same index are resampled together). */
  prompt: number;
  delta: number;
  category?: string;
}

export interface WinRateOptions {
  /** |Δ| ≤ tieMargin is a tie (default 0: only exact equality ties). */
  tieMargin?: number;
  /** Bootstrap replicates (default 2000). */
  bootstrap?: number;
  /** Bootstrap seed (default 0). */
  seed?: number;
}

export interface WinRate {
  /** (wins + ½·ties) / n. */
  rate: number;
  /** 95% percentile-bootstrap interval over prompts for `rate`. */
  interval: [number, number];
  intervalMethod: "bootstrap-prompts";
  wins: number;
  losses: number;
  ties: number;
  n: number;
  prompts: number;
  /** wins / (wins + losses); NaN when every sample tied. */
  decisive: number;
  /** Wilson 95% interval for `decisive`. */
  decisiveInterval: [number, number];
  decisiveIntervalMethod: "wilson";
  /** Mean Δ = tuned − base. */
  meanDelta: number;
}

/**
 * Percentile bootstrap over clusters: `perCluster[i]` = [sum of per-sample scores, sample count].
 * Each replicate draws clusters with replacement and computes Σscore / Σcount.
 */
export function clusterBootstrap(perCluster: readonly [number, number][], replicates: number, seed: number): [number, number] {
  const m = perCluster.length;
  if (m === 0) return [Number.NaN, Number.NaN];
  if (!Number.isInteger(replicates) || replicates < 1) throw new Error(`bootstrap replicates must be a positive integer, got ${replicates}`);
  const rng = new Rng(seed);
  const reps = new Float64Array(replicates);
  for (let b = 0; b < replicates; b++) {
    let s = 0;
    let c = 0;
    for (let i = 0; i < m; i++) {
      const [si, ci] = perCluster[rng.int(0, m)]!;
      s += si;
      c += ci;
    }
    reps[b] = s / c;
  }
  reps.sort();
  return [quantileSorted(reps, 0.025), quantileSorted(reps, 0.975)];
}

/** The win rate of tuned over base from per-sample score differences; see the file comment. */
export function winRate(samples: readonly ComparedSample[], opts: WinRateOptions = {}): WinRate {
  const tieMargin = opts.tieMargin ?? 0;
  if (!(tieMargin >= 0)) throw new Error(`tie margin must be ≥ 0, got ${tieMargin}`);
  let wins = 0, losses = 0, ties = 0, sumDelta = 0;
  const clusters = new Map<number, [number, number]>();
  for (const s of samples) {
    const o = outcomeOf(s.delta, tieMargin);
    const score = o === "win" ? 1 : o === "tie" ? 0.5 : 0;
    if (o === "win") wins++;
    else if (o === "loss") losses++;
    else ties++;
    sumDelta += s.delta;
    const c = clusters.get(s.prompt) ?? [0, 0];
    c[0] += score;
    c[1] += 1;
    clusters.set(s.prompt, c);
  }
  const n = samples.length;
  const decisiveN = wins + losses;
  return {
    rate: n === 0 ? Number.NaN : (wins + 0.5 * ties) / n,
    interval: clusterBootstrap([...clusters.values()], opts.bootstrap ?? 2000, opts.seed ?? 0),
    intervalMethod: "bootstrap-prompts",
    wins, losses, ties, n,
    prompts: clusters.size,
    decisive: decisiveN === 0 ? Number.NaN : wins / decisiveN,
    decisiveInterval: wilsonInterval(wins, decisiveN),
    decisiveIntervalMethod: "wilson",
    meanDelta: n === 0 ? Number.NaN : sumDelta / n,
  };
}

/** winRate per category (samples without a category are left out); categories in first-seen order. */
export function winRateByCategory(samples: readonly ComparedSample[], opts: WinRateOptions = {}): Record<string, WinRate> {
  const groups = new Map<string, ComparedSample[]>();
  for (const s of samples) {
    if (s.category === undefined) continue;
    const g = groups.get(s.category) ?? [];
    g.push(s);
    groups.set(s.category, g);
  }
  const out: Record<string, WinRate> = {};
  for (const [cat, g] of groups) out[cat] = winRate(g, opts);
  return out;
}
