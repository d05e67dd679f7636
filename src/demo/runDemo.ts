// `runDemo`: the whole preference loop on the shipped emoji model, under one output folder:
//
//   1. pairs   K candidates per training caption from the base model (recorded seeds) into
//              <out>/pairs.sqlite, and per held-out caption into <out>/heldout-pairs.sqlite
//   2. label   both stores labelled by the alignment reward (AI feedback)
//   3. train   Diffusion-DPO on <out>/pairs.sqlite (LoRA by default) into <out>/train
//   4. eval    tuned vs base on held-out captions (same seeds): win rates under the labelling
//              reward and under rewards that did not label, implicit-reward accuracy on the
//              held-out pairs, diversity → <out>/eval (eval.json, report.html, images/)
//   5. report  <out>/report.html (the evaluation report with the demo's own section on top) and
//              <out>/summary.json (the headline figures)
//
// Re-running: a stage writes <out>/stages/<stage>.json when it has finished (atomically), and
// with `resume` finished stages are skipped. An unfinished stage is redone, but the work below it
// resumes too: pair generation samples only missing candidates, labelling scores only unlabelled
// pairs, and training continues from its latest checkpoint (the trainer's exact resume).
// Without `resume`, a folder that already holds a demo run is refused (nothing is overwritten).
//
// The library never prints: progress goes out as DemoEvents. Each stage is its own file
// (stage-pairs.ts … stage-report.ts); this one resolves the settings and runs them in order.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadReward as loadRewardByName } from "../feedback/registry.js";
import type { RewardModel } from "../feedback/reward.js";
import { demoPromptSets, evaluationPool, splitHeldout, type DemoPromptSets } from "./prompts.js";
import { DemoError, resolveSettings, resumedSettings, settingConflicts, SETTING_STAGE, type DemoSettings } from "./settings.js";
import { evalStage, headlineText, targetsOf } from "./stage-eval.js";
import { labelHeadline, labelStage } from "./stage-label.js";
import { pairsHeadline, pairsStage } from "./stage-pairs.js";
import { reportStage } from "./stage-report.js";
import { trainHeadline } from "./stage-train.js";
import { trainRounds } from "./stage-rounds.js";
import {
  DEMO_STAGES, modelFingerprint, readJson, readStageMark, stagesDone, writeJsonAtomic, writeStageMark,
  type DemoStage, type StageMark,
} from "./stages.js";
import {
  demoPaths, STAGE_TITLES, type DemoEvent, type DemoSummary, type EvalStageSummary, type LabelStageSummary,
  type PairsStageSummary, type TrainStageSummary,
} from "./types.js";

export { DEMO_STAGES, type DemoStage } from "./stages.js";
export {
  demoPaths, STAGE_TITLES, type DemoEvent, type DemoPaths, type DemoSummary, type EvalStageSummary, type Headline,
  type LabelStageSummary, type PairsStageSummary, type Target, type TrainStageSummary,
} from "./types.js";
export { headlineText, targetsOf } from "./stage-eval.js";

export interface DemoOptions {
  /** The output folder (created). */
  out: string;
  /** Skip finished stages of a run in `out` (its saved settings apply; conflicting knobs are refused). */
  resume?: boolean;
  /** Knobs; unset ones take the defaults (or, resuming, the run's saved values). */
  settings?: Partial<DemoSettings>;
  /** The caption sets (default: the emoji captions, demoPromptSets). */
  prompts?: DemoPromptSets;
  /** How a reward name becomes a RewardModel (default: src/feedback's loadReward). */
  loadReward?: (spec: string) => RewardModel;
  /** The command line that started the run, for the report. */
  command?: string;
  onEvent?: (e: DemoEvent) => void;
}

interface SavedRun {
  settings: DemoSettings;
  baseModelFingerprint: string;
  command: string | null;
  createdAt: string;
}

/** Runs (or resumes) the demo; see the file comment. */
export async function runDemo(opts: DemoOptions): Promise<DemoSummary> {
  const out = opts.out;
  const paths = demoPaths(out);
  const emit = (e: DemoEvent) => opts.onEvent?.(e);
  const given = opts.settings ?? {};
  const loadReward = opts.loadReward ?? loadRewardByName;

  // ---- settings: fresh, or the saved ones of the run being resumed ----
  let settings: DemoSettings;
  let fingerprint: string;
  const done0 = existsSync(out) ? stagesDone(out) : [];
  if (existsSync(paths.settings)) {
    if (!opts.resume) {
      throw new DemoError(
        `${out} already holds a demo run (${done0.length > 0 ? `finished stages: ${done0.join(", ")}` : "no stage finished yet"}). ` +
          "Pass --resume to continue it (finished stages are skipped), or choose another --out.",
      );
    }
    const saved = readJson<SavedRun>(paths.settings);
    settings = resolveSettings(saved.settings);
    const conflicts = settingConflicts(settings, given).filter(([k]) => done0.includes(SETTING_STAGE[k]));
    if (conflicts.length > 0) {
      throw new DemoError(
        `cannot resume ${out} with different settings for stages it has finished: ` +
          conflicts.map(([k, a, b]) => `${k} was ${JSON.stringify(a)}, now ${JSON.stringify(b)}`).join("; ") +
          `. Drop those options to resume, or choose another --out for a new run.`,
      );
    }
    // knobs not given keep the saved values (given holds undefined for every flag left out)
    settings = resumedSettings(settings, given);
    fingerprint = modelFingerprint(settings.model);
    if (fingerprint !== saved.baseModelFingerprint && done0.length > 0) {
      throw new DemoError(
        `the base model ${settings.model} changed since ${out} was started (its files differ), so its pairs and training no longer match it. ` +
          "Choose another --out for a new run (or delete the folder).",
      );
    }
  } else {
    if (done0.length > 0) throw new DemoError(`${out}: stage marks without ${paths.settings}; delete ${join(out, "stages")} or choose another --out`);
    settings = resolveSettings(given);
    if (!existsSync(join(settings.model, "model_index.json"))) {
      throw new DemoError(`base model ${settings.model}: not a diffusers model folder (no model_index.json)`);
    }
    fingerprint = modelFingerprint(settings.model);
  }
  writeJsonAtomic(paths.settings, { settings, baseModelFingerprint: fingerprint, command: opts.command ?? null, createdAt: new Date().toISOString() } satisfies SavedRun);

  const sets = opts.prompts ?? demoPromptSets(settings.seed);
  if (settings.pairsPrompts > sets.train.length) throw new DemoError(`demo: ${settings.pairsPrompts} training prompts asked for, but there are only ${sets.train.length} training captions`);
  const trainPrompts = sets.train.slice(0, settings.pairsPrompts).map((p) => p.prompt);
  const { pool, what } = evaluationPool(sets, settings.evalCaptions, settings.pairsPrompts, settings.rounds);
  const { evalPrompts, pairPrompts } = splitHeldout(pool, settings.evalPrompts, settings.heldoutPairsPrompts, what);

  emit({ type: "start", out, settings, resumed: Boolean(opts.resume) && done0.length > 0, stagesDone: done0 });
  const marks: Partial<Record<DemoStage, StageMark>> = {};
  const skipped: DemoStage[] = [];

  const stage = async <S>(name: DemoStage, headline: (s: S) => string, work: () => Promise<S>): Promise<S> => {
    const index = DEMO_STAGES.indexOf(name);
    const existing = opts.resume ? readStageMark<S>(out, name) : null;
    if (existing !== null) {
      emit({ type: "stage", stage: name, index, count: DEMO_STAGES.length, title: STAGE_TITLES[name], skipped: true });
      emit({ type: "stage-done", stage: name, seconds: existing.seconds, skipped: true, headline: headline(existing.summary) });
      marks[name] = existing;
      skipped.push(name);
      return existing.summary;
    }
    emit({ type: "stage", stage: name, index, count: DEMO_STAGES.length, title: STAGE_TITLES[name], skipped: false });
    const t0 = performance.now();
    const summary = await work();
    const seconds = (performance.now() - t0) / 1000;
    marks[name] = writeStageMark(out, name, seconds, summary);
    emit({ type: "stage-done", stage: name, seconds, skipped: false, headline: headline(summary) });
    return summary;
  };

  // ---- 1. pairs ----
  const pairs = await stage<PairsStageSummary>("pairs", pairsHeadline,
    () => pairsStage(settings, paths, trainPrompts, pairPrompts, emit));

  // ---- 2. label ----
  const labels = await stage<LabelStageSummary>("label", labelHeadline,
    () => labelStage(settings, paths, loadReward, emit));

  // ---- 3. train ----
  const train = await stage<TrainStageSummary>("train", trainHeadline,
    () => trainRounds(settings, paths, sets.train, { pairs, labels }, loadReward, emit));

  // ---- 4. eval ----
  const evalSummary = await stage<EvalStageSummary>("eval",
    (s) => headlineText(s, settings.labelReward),
    () => evalStage(settings, paths, evalPrompts, loadReward, emit));

  // ---- 5. report ----
  const targets = targetsOf(evalSummary, settings.labelReward, settings.otherRewards);
  const partial = {
    out, report: paths.report, evalJson: join(paths.eval, "eval.json"), summaryJson: paths.summary, settings,
    baseModelFingerprint: fingerprint, labelReward: settings.labelReward, otherRewards: settings.otherRewards,
    pairs, labels, train, winRate: evalSummary.winRate, implicitAccuracy: evalSummary.implicitAccuracy,
    diversity: evalSummary.diversity, targets,
    ...(evalSummary.roundWinRates !== undefined ? { roundWinRates: evalSummary.roundWinRates } : {}),
  };
  await stage<{ report: string; summary: string }>("report", (s) => s.report, () => reportStage(paths, {
    settings, pairs, labels, train, targets, marks, command: readJson<SavedRun>(paths.settings).command,
    ...(evalSummary.roundWinRates !== undefined ? { roundWinRates: evalSummary.roundWinRates } : {}),
  }));
  const stageSeconds = Object.fromEntries(DEMO_STAGES.map((s) => [s, marks[s]?.seconds ?? 0])) as Record<DemoStage, number>;
  const summary: DemoSummary = {
    ...partial, stageSeconds, totalSeconds: Object.values(stageSeconds).reduce((a, b) => a + b, 0), skipped,
  };
  writeJsonAtomic(paths.summary, summary);
  emit({ type: "done", summary });
  return summary;
}
