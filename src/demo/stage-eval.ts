// Stage 4: tuned vs base on the held-out captions (same seeds): win rates under the labelling
// reward and under rewards that did not label, implicit-reward accuracy on the held-out pairs,
// diversity → <out>/eval (eval.json, report.html, images/). Also the demo's targets.
import { evaluate, type EvalEvent, type EvalPhase } from "../eval/evaluate.js";
import { loadModelPair } from "../eval/models.js";
import { readRunLog } from "../eval/runLog.js";
import type { RewardModel } from "../feedback/reward.js";
import { join } from "node:path";
import type { DemoSettings } from "./settings.js";
import { roundDir, roundTrainDir } from "./stage-rounds.js";
import type { DemoPaths, Emit, EvalStageSummary, Headline, Target } from "./types.js";

const EVAL_PHASE_LABEL: Record<EvalPhase, string> = {
  "sample-base": "base samples",
  "sample-tuned": "tuned samples",
  score: "scoring",
  "best-of-n": "best-of-n",
  implicit: "implicit accuracy",
  write: "writing",
};

/** "alignment 72.0% [61%, 82%] · category 64% … · implicit 68% · diversity −5%". */
export function headlineText(s: EvalStageSummary, labelReward: string): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const parts = Object.entries(s.winRate).map(([name, w]) =>
    `win rate ${name}${name === labelReward ? " (labelling reward)" : ""} ${pct(w.rate)} [${pct(w.interval[0])}, ${pct(w.interval[1])}]`);
  if (s.implicitAccuracy) parts.push(`implicit accuracy ${pct(s.implicitAccuracy.accuracy)} on ${s.implicitAccuracy.pairs} held-out pairs`);
  if (s.diversity) parts.push(`diversity ${s.diversity.change >= 0 ? "+" : ""}${(100 * s.diversity.change).toFixed(1)}% vs base`);
  return parts.join(" · ");
}

/**
 * The demo's targets (issue 21) against a run's measurements: the labelling reward's win rate
 * ≥ 75% and every other reward's ≥ 65%, each with its lower 95% bound above 50%; held-out
 * implicit accuracy ≥ 70%; diversity within 20% of the base model's.
 */
export function targetsOf(s: EvalStageSummary, labelReward: string, otherRewards: string[]): Target[] {
  const out: Target[] = [];
  const winTarget = (reward: string, what: string, min: number) => {
    const w = s.winRate[reward];
    const met = w !== undefined && w.rate >= min && w.interval[0] > 0.5;
    out.push({ what, target: `≥ ${Math.round(min * 100)}%, lower bound > 50%`, value: w?.rate ?? null, met });
  };
  winTarget(labelReward, `win rate under the labelling reward (${labelReward})`, 0.75);
  for (const other of otherRewards) winTarget(other, `win rate under a reward that did not label (${other})`, 0.65);
  const acc = s.implicitAccuracy?.accuracy ?? null;
  out.push({ what: "implicit-reward accuracy on held-out pairs", target: "≥ 70%", value: acc, met: acc !== null && acc >= 0.7 });
  const d = s.diversity?.change ?? null;
  out.push({ what: "diversity change vs the base model", target: "within ±20%", value: d, met: d !== null && Math.abs(d) <= 0.2 });
  return out;
}

/** What the evaluation captions are, for the report (see DemoSettings.evalCaptions). */
export function evalSourceText(settings: Pick<DemoSettings, "evalCaptions">, count: number): string {
  return settings.evalCaptions === "heldout-emoji"
    ? `held-out emoji captions (${count}; emoji the base model never saw)`
    : `captions DPO never trained on (${count}; emoji the base model was pretrained on)`;
}

/** Each earlier round's policy vs the base under the labelling reward (same captions and seeds). */
async function earlierRounds(
  settings: DemoSettings, paths: DemoPaths, prompts: { prompt: string; category?: string }[], labelReward: RewardModel, emit: Emit,
): Promise<NonNullable<EvalStageSummary["roundWinRates"]>> {
  const out: NonNullable<EvalStageSummary["roundWinRates"]> = [];
  for (let r = 1; r < settings.rounds; r++) {
    const models = loadModelPair(settings.model, roundTrainDir(paths, r, settings.rounds));
    try {
      const result = await evaluate({
        models, prompts, promptSource: evalSourceText(settings, prompts.length),
        seeds: Array.from({ length: settings.seeds }, (_, i) => 1000 + i),
        sampler: settings.sampler, steps: settings.sampleSteps, guidance: settings.guidance, rewards: [labelReward],
        outDir: join(roundDir(paths, r), "eval"), embedImages: false,
        onEvent: (e: EvalEvent) => {
          if (e.type === "progress") emit({ type: "progress", stage: "eval", label: `round ${r}: ${EVAL_PHASE_LABEL[e.phase]}`, done: e.done, total: e.total });
        },
      });
      const w = result.summary.winRate[labelReward.name]!;
      out.push({ round: r, rate: w.rate, interval: w.interval, n: w.n });
    } finally {
      models.dispose();
    }
  }
  return out;
}

/** Stage 4: evaluate() of the tuned run against the base on the held-out captions. */
export async function evalStage(
  settings: DemoSettings, paths: DemoPaths, prompts: { prompt: string; category?: string }[],
  loadReward: (spec: string) => RewardModel, emit: Emit,
): Promise<EvalStageSummary> {
  const rewards: RewardModel[] = [];
  const models = loadModelPair(settings.model, paths.train);
  try {
    for (const name of [settings.labelReward, ...settings.otherRewards]) rewards.push(loadReward(name));
    const names = rewards.map((r) => r.name);
    if (new Set(names).size !== names.length) throw new Error(`demo: the rewards' names repeat (${names.join(", ")})`);
    const result = await evaluate({
      models, prompts, promptSource: evalSourceText(settings, prompts.length),
      seeds: Array.from({ length: settings.seeds }, (_, i) => 1000 + i),
      sampler: settings.sampler, steps: settings.sampleSteps, guidance: settings.guidance, rewards,
      pairs: { spec: paths.heldoutPairs, open: { format: "sqlite" }, batchSize: 16 },
      implicitDraws: settings.implicitDraws, beta: settings.beta,
      run: { path: paths.train, log: readRunLog(paths.train) }, outDir: paths.eval, embedImages: false,
      onEvent: (e: EvalEvent) => {
        if (e.type === "progress") {
          emit({ type: "progress", stage: "eval", label: EVAL_PHASE_LABEL[e.phase], done: e.done, total: e.total, ...(e.detail ? { detail: e.detail } : {}) });
        }
      },
    });
    // the reward names as the run knows them (the labelling reward first)
    const byName = (i: number) => result.summary.winRate[rewards[i]!.name]!;
    const winRate: Record<string, Headline> = {};
    [settings.labelReward, ...settings.otherRewards].forEach((name, i) => {
      const w = byName(i);
      winRate[name] = { rate: w.rate, interval: w.interval, wins: w.wins, ties: w.ties, losses: w.losses, n: w.n };
    });
    const ia = result.summary.implicitAccuracy;
    const d = result.summary.diversity;
    const roundWinRates = settings.rounds > 1 ? await earlierRounds(settings, paths, prompts, rewards[0]!, emit) : undefined;
    if (roundWinRates !== undefined) {
      const w = winRate[settings.labelReward]!;
      roundWinRates.push({ round: settings.rounds, rate: w.rate, interval: w.interval, n: w.n });
    }
    return {
      ...(roundWinRates !== undefined ? { roundWinRates } : {}),
      winRate,
      implicitAccuracy: ia === null ? null : { accuracy: ia.accuracy, interval: ia.interval, pairs: ia.pairs, draws: ia.draws },
      diversity: d === null ? null : { base: d.base, tuned: d.tuned, change: d.base > 0 ? d.tuned / d.base - 1 : Number.NaN },
    };
  } finally {
    models.dispose();
    for (const r of rewards) r.dispose?.();
  }
}
