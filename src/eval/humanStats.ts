// The human evaluation's arithmetic: per-question win rates of tuned over base, the per-comparison
// majority over raters (the paper's 5-rater majority vote), and inter-rater agreement.
//
// Each vote answers three questions (general preference, visual appeal, prompt alignment) with
// tuned / base / tie, already mapped back from the left/right the rater saw.
//
// - Per-vote win rate: every (rater, comparison) answer is one sample, tuned = win, base = loss,
//   tie = ½ — src/eval/stats.ts winRate with Δ = +1 / −1 / 0, so its 95% interval is the
//   percentile bootstrap over PROMPTS (all seeds and all raters of a drawn prompt come along) and
//   the decisive rate wins / (wins + losses) gets a Wilson interval.
// - Majority: per comparison (prompt × seed), tuned if more raters chose tuned than base, base
//   if fewer, tie if equal (tie votes are abstentions here); then the same win rate over
//   comparisons, ties ½.
// - Agreement: Fleiss' kappa over the categories tuned / base / tie, on comparisons with at least
//   two raters. With n_i raters on subject i and n_ij of them in category j:
//     P_i = (Σ_j n_ij² − n_i) / (n_i (n_i − 1))       (share of agreeing rater pairs)
//     P̄ = mean_i P_i,  p_j = Σ_i n_ij / Σ_i n_i,  P̄e = Σ_j p_j²,  κ = (P̄ − P̄e) / (1 − P̄e)
//   With the same n on every subject this is Fleiss (1971); unequal n_i use the same per-subject
//   P_i (the usual extension). P̄ itself is reported as the observed pairwise agreement.
import { winRate, type WinRate, type WinRateOptions } from "./stats.js";

export const HUMAN_QUESTIONS = ["general", "appeal", "alignment"] as const;
export type HumanQuestion = (typeof HUMAN_QUESTIONS)[number];

/** What each question asks the rater (the paper's three questions). */
export const HUMAN_QUESTION_TEXT: Record<HumanQuestion, string> = {
  general: "Which image do you prefer?",
  appeal: "Which image is more visually appealing?",
  alignment: "Which image better fits the prompt?",
};

export type HumanWinner = "tuned" | "base" | "tie";
const CATEGORIES: readonly HumanWinner[] = ["tuned", "base", "tie"];

/** One rater's answers on one comparison, in tuned / base / tie terms. */
export interface HumanVote {
  comparison: number;
  /** The prompt (the bootstrap's cluster: every seed of a prompt is resampled together). */
  prompt: string;
  category?: string | null;
  seed?: number;
  rater: string;
  answers: Record<HumanQuestion, HumanWinner>;
}

export interface FleissKappa {
  /** κ; NaN when it is undefined (fewer than one subject with ≥ 2 ratings, or every rating in one category). */
  kappa: number;
  /** P̄: the mean share of agreeing rater pairs per subject. */
  observed: number;
  /** P̄e = Σ p_j². */
  expected: number;
  /** Subjects with at least two ratings (the others are left out). */
  subjects: number;
}

/**
 * Fleiss' kappa from a subjects × categories table of rating counts (see the file comment);
 * rows with fewer than two ratings are left out.
 */
export function fleissKappa(counts: readonly (readonly number[])[]): FleissKappa {
  const rows = counts.filter((r) => r.reduce((a, b) => a + b, 0) >= 2);
  const k = counts[0]?.length ?? 0;
  for (const r of counts) {
    if (r.length !== k) throw new Error(`fleissKappa: every row needs ${k} category counts, got ${r.length}`);
    for (const v of r) if (!Number.isInteger(v) || v < 0) throw new Error(`fleissKappa: counts must be non-negative integers, got ${v}`);
  }
  if (rows.length === 0) return { kappa: Number.NaN, observed: Number.NaN, expected: Number.NaN, subjects: 0 };
  let sumP = 0;
  let total = 0;
  const perCategory = new Array<number>(k).fill(0);
  for (const r of rows) {
    const n = r.reduce((a, b) => a + b, 0);
    let sq = 0;
    r.forEach((v, j) => {
      sq += v * v;
      perCategory[j]! += v;
    });
    sumP += (sq - n) / (n * (n - 1));
    total += n;
  }
  const observed = sumP / rows.length;
  const expected = perCategory.reduce((a, c) => a + (c / total) ** 2, 0);
  const kappa = expected === 1 ? Number.NaN : (observed - expected) / (1 - expected);
  return { kappa, observed, expected, subjects: rows.length };
}

/** Majority over raters: tuned if more chose tuned than base, base if fewer, else tie. */
export function majorityOf(tally: Record<HumanWinner, number>): HumanWinner {
  return tally.tuned > tally.base ? "tuned" : tally.base > tally.tuned ? "base" : "tie";
}

export interface HumanQuestionResult {
  question: HumanQuestion;
  text: string;
  /** Every vote a sample (ties ½), bootstrap over prompts. */
  votes: WinRate;
  /** One sample per comparison: the majority over its raters. */
  majority: WinRate;
  agreement: FleissKappa & { categories: readonly HumanWinner[] };
}

export interface HumanComparisonResult {
  comparison: number;
  prompt: string;
  seed: number | null;
  category: string | null;
  raters: number;
  /** Per question: votes per outcome and the majority. */
  tally: Record<HumanQuestion, Record<HumanWinner, number> & { majority: HumanWinner }>;
}

export interface HumanResults {
  raters: { rater: string; votes: number }[];
  votes: number;
  comparisons: number;
  prompts: number;
  /** The smallest and largest number of raters on one comparison. */
  ratersPerComparison: { min: number; max: number };
  questions: Record<HumanQuestion, HumanQuestionResult>;
  perComparison: HumanComparisonResult[];
  tieRule: string;
}

const DELTA: Record<HumanWinner, number> = { tuned: 1, base: -1, tie: 0 };

/** Win rates, majorities and agreement from the votes; see the file comment. */
export function humanResults(votes: readonly HumanVote[], opts: Pick<WinRateOptions, "bootstrap" | "seed"> = {}): HumanResults {
  const promptIndex = new Map<string, number>();
  const pi = (p: string) => {
    let i = promptIndex.get(p);
    if (i === undefined) promptIndex.set(p, (i = promptIndex.size));
    return i;
  };
  const byComparison = new Map<number, HumanVote[]>();
  const raterVotes = new Map<string, number>();
  for (const v of votes) {
    const g = byComparison.get(v.comparison) ?? [];
    if (g.some((o) => o.rater === v.rater)) throw new Error(`human results: rater "${v.rater}" has two votes on comparison ${v.comparison}`);
    g.push(v);
    byComparison.set(v.comparison, g);
    raterVotes.set(v.rater, (raterVotes.get(v.rater) ?? 0) + 1);
  }
  const comparisons = [...byComparison.entries()].sort((a, b) => a[0] - b[0]);
  const perComparison: HumanComparisonResult[] = comparisons.map(([id, g]) => {
    const tally = {} as HumanComparisonResult["tally"];
    for (const q of HUMAN_QUESTIONS) {
      const t = { tuned: 0, base: 0, tie: 0 };
      for (const v of g) t[v.answers[q]]++;
      tally[q] = { ...t, majority: majorityOf(t) };
    }
    return { comparison: id, prompt: g[0]!.prompt, seed: g[0]!.seed ?? null, category: g[0]!.category ?? null, raters: g.length, tally };
  });
  const wr = { bootstrap: opts.bootstrap ?? 2000, seed: opts.seed ?? 0, tieMargin: 0 };
  const questions = {} as Record<HumanQuestion, HumanQuestionResult>;
  for (const q of HUMAN_QUESTIONS) {
    const perVote = votes.map((v) => ({ prompt: pi(v.prompt), delta: DELTA[v.answers[q]] }));
    const perMajority = perComparison.map((c) => ({ prompt: pi(c.prompt), delta: DELTA[c.tally[q].majority] }));
    const kappa = fleissKappa(perComparison.map((c) => CATEGORIES.map((k) => c.tally[q][k])));
    questions[q] = { question: q, text: HUMAN_QUESTION_TEXT[q], votes: winRate(perVote, wr), majority: winRate(perMajority, wr), agreement: { ...kappa, categories: CATEGORIES } };
  }
  const sizes = perComparison.map((c) => c.raters);
  return {
    raters: [...raterVotes.entries()].map(([rater, n]) => ({ rater, votes: n })).sort((a, b) => (a.rater < b.rater ? -1 : a.rater > b.rater ? 1 : 0)),
    votes: votes.length,
    comparisons: perComparison.length,
    prompts: new Set(votes.map((v) => v.prompt)).size,
    ratersPerComparison: { min: sizes.length ? Math.min(...sizes) : 0, max: sizes.length ? Math.max(...sizes) : 0 },
    questions,
    perComparison,
    tieRule: "a tie counts as half a win; the majority is tuned vs base votes (tie votes abstain), equal counts tie",
  };
}

/**
 * How often a reward's verdict (tuned − base beyond the tie margin) matches the human majority,
 * over comparisons where both are decisive; `rewardDelta(comparison)` gives the reward's Δ or
 * null when the comparison has no score.
 */
export function rewardAgreement(results: HumanResults, question: HumanQuestion, rewardDelta: (comparison: number) => number | null, tieMargin = 0): { agree: number; decisive: number; rate: number } {
  let agree = 0;
  let decisive = 0;
  for (const c of results.perComparison) {
    const m = c.tally[question].majority;
    const d = rewardDelta(c.comparison);
    if (m === "tie" || d === null || Math.abs(d) <= tieMargin) continue;
    decisive++;
    if ((d > 0) === (m === "tuned")) agree++;
  }
  return { agree, decisive, rate: decisive === 0 ? Number.NaN : agree / decisive };
}
