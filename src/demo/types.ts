// The demo's events, stage summaries and output paths: named here, below runDemo.ts, the stage
// files and report.ts, which all use them.
import { join } from "node:path";
import type { LabelSummary } from "../feedback/label.js";
import type { DemoSettings } from "./settings.js";
import type { DemoStage } from "./stages.js";

export const STAGE_TITLES: Record<DemoStage, string> = {
  pairs: "generate candidate pairs from the base model",
  label: "label the pairs with the reward (AI feedback)",
  train: "train with Diffusion-DPO",
  eval: "evaluate tuned vs base on held-out captions",
  report: "write the report",
};

export type DemoEvent =
  | { type: "start"; out: string; settings: DemoSettings; resumed: boolean; stagesDone: DemoStage[] }
  | { type: "stage"; stage: DemoStage; index: number; count: number; title: string; skipped: boolean }
  /** `label` names a phase inside the stage (a new label starts a new progress bar). */
  | { type: "progress"; stage: DemoStage; label: string; done: number; total: number; detail?: string }
  | { type: "log"; stage: DemoStage; message: string }
  | { type: "stage-done"; stage: DemoStage; seconds: number; skipped: boolean; headline: string }
  | { type: "done"; summary: DemoSummary };

export interface PairsStageSummary {
  trainPrompts: number;
  heldoutPrompts: number;
  trainPairs: number;
  heldoutPairs: number;
  imagesGenerated: number;
}

export interface LabelStageSummary {
  reward: string;
  train: LabelSummary;
  heldout: LabelSummary;
}

export interface TrainStageSummary {
  steps: number;
  finalPath: string;
  resumedFrom: string | null;
  trainableParameters: number;
  effectiveBatch: number;
  /** Pairs the trainer could use (ties and unlabelled pairs skipped). */
  usablePairs: number;
  /** Means of the last 10% of the logged steps. */
  finalLoss: number | null;
  finalImplicitAcc: number | null;
  pairsPerSec: number | null;
  /** With --rounds R > 1: each round's pairs, labels and training (the last round's is the fields above). */
  rounds?: RoundSummary[];
}

/** One on-policy round: candidates from the previous round's policy, labelled, trained on. */
export interface RoundSummary {
  round: number;
  /** Where its candidates came from: "base" or the previous round's training folder. */
  policy: string;
  pairs: PairsStageSummary;
  labels: LabelSummary;
  train: Omit<TrainStageSummary, "rounds">;
  seconds: number;
}

export interface Headline {
  rate: number;
  interval: [number, number];
  wins: number;
  ties: number;
  losses: number;
  n: number;
}

export interface EvalStageSummary {
  /** With --rounds R > 1: the labelling reward's win rate of each round's policy vs the base (last = winRate's). */
  roundWinRates?: { round: number; rate: number; interval: [number, number]; n: number }[];
  winRate: Record<string, Headline>;
  implicitAccuracy: { accuracy: number; interval: [number, number]; pairs: number; draws: number } | null;
  /** Mean pairwise distance between a prompt's samples across seeds; change = tuned / base − 1. */
  diversity: { base: number; tuned: number; change: number } | null;
}

export interface Target {
  what: string;
  target: string;
  value: number | null;
  met: boolean;
}

export interface DemoSummary {
  out: string;
  report: string;
  evalJson: string;
  summaryJson: string;
  settings: DemoSettings;
  baseModelFingerprint: string;
  labelReward: string;
  otherRewards: string[];
  pairs: PairsStageSummary;
  labels: LabelStageSummary;
  train: TrainStageSummary;
  winRate: Record<string, Headline>;
  implicitAccuracy: EvalStageSummary["implicitAccuracy"];
  diversity: EvalStageSummary["diversity"];
  roundWinRates?: EvalStageSummary["roundWinRates"];
  targets: Target[];
  /** Seconds each stage took when it ran, and their sum. */
  stageSeconds: Record<DemoStage, number>;
  totalSeconds: number;
  /** Stages this call skipped because they were done. */
  skipped: DemoStage[];
}

/** The files a demo run writes under `out` (demoPaths). */
export type DemoPaths = ReturnType<typeof demoPaths>;

/** Paths of the files a demo run writes under `out`. */
export function demoPaths(out: string) {
  return {
    settings: join(out, "demo.json"),
    pairs: join(out, "pairs.sqlite"),
    heldoutPairs: join(out, "heldout-pairs.sqlite"),
    train: join(out, "train"),
    rounds: join(out, "rounds"),
    eval: join(out, "eval"),
    report: join(out, "report.html"),
    summary: join(out, "summary.json"),
  };
}

export type Emit = (e: DemoEvent) => void;
