// The shape of eval.json (what `evaluate` writes and the reports read), kept apart from
// evaluate.ts so that the report modules, which evaluate.ts calls, can name it without a cycle.
import type { SamplerName } from "../diffusion/index.js";
import type { WinRate } from "./stats.js";
import type { DiversityResult } from "./diversity.js";
import type { BestOfNResult } from "./bestOfN.js";
import type { ImplicitAccuracyResult } from "./implicit.js";

export interface WinRateSummary extends WinRate {
  reward: string;
  description: string;
  byCategory: Record<string, WinRate>;
}

/** A reward's mean score over all samples with a 95% percentile bootstrap over prompts (seeds resampled together). */
export interface MeanScore {
  mean: number;
  interval: [number, number];
}

export interface MeanScoreSummary {
  base: MeanScore;
  tuned: MeanScore;
  /** Mean of tuned − base (paired: the same prompts and seeds). */
  delta: MeanScore;
}

export interface ImplicitSummary extends Omit<ImplicitAccuracyResult, "insides"> {
  source: string;
}

export interface EvalConfig {
  base: string;
  tuned: string;
  tunedKind: string;
  lora?: { rank: number; alpha: number; targets: string[] };
  prompts: string;
  promptCount: number;
  seeds: number[];
  /** A UNet sampler, or "flow_match_euler" (SD3 / Flux folders). */
  sampler: SamplerName | "flow_match_euler";
  steps: number;
  guidance: number;
  rewards: string[];
  tieMargin: number;
  bootstrap: number;
  bestOfN: number;
  pairs: string | null;
  pairsLimit: number | null;
  implicitDraws: number;
  beta: number;
  run: string | null;
  /** The tuned model's training config when the run folder has one. */
  training: unknown;
  createdAt: string;
}

export interface EvalSummary {
  /** Per reward name. */
  winRate: Record<string, WinRateSummary>;
  /** Mean score per reward name for base and tuned (absent in eval.json files written before it). */
  meanScores?: Record<string, MeanScoreSummary>;
  /** Ties per reward name (also inside winRate). */
  ties: Record<string, number>;
  implicitAccuracy: ImplicitSummary | null;
  /** null with a single seed per prompt. */
  diversity: DiversityResult | null;
  /** Per reward name; null when not asked for. */
  bestOfN: Record<string, BestOfNResult> | null;
  config: EvalConfig;
}

export interface EvalSample {
  prompt: string;
  seed: number;
  category?: string;
  /** Relative to the output folder. */
  base: string;
  tuned: string;
  scores: Record<string, { base: number; tuned: number }>;
}

export interface EvalJson {
  summary: EvalSummary;
  samples: EvalSample[];
}
