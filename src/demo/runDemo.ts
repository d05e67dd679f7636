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
// The library never prints: progress goes out as DemoEvents.
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadTrainConfig, type TrainConfig } from "../config/train.js";
import { openPreferenceData } from "../data/open.js";
import { PreferenceStore } from "../data/store.js";
import { NoiseSchedule } from "../diffusion/index.js";
import { evaluate, type EvalEvent, type EvalJson, type EvalPhase } from "../eval/evaluate.js";
import { loadModelPair } from "../eval/models.js";
import { readRunLog } from "../eval/runLog.js";
import { labelPairs, type LabelSummary } from "../feedback/label.js";
import { generatePairs } from "../feedback/pairs.js";
import { loadReward as loadRewardByName } from "../feedback/registry.js";
import type { RewardModel } from "../feedback/reward.js";
import { disposeTextToImageModel, encodePrompts, loadModelFolder, saveModelFolder } from "../models/pipeline.js";
import { injectLora } from "../nn/lora.js";
import { defaultImageSize } from "../sample/generate.js";
import { listCheckpoints } from "../train/checkpoint.js";
import { LoaderBatchSource } from "../train/data.js";
import { jsonlMetricsLog } from "../train/events.js";
import { DpoTrainer, loraAdapters } from "../train/trainer.js";
import { demoPromptSets, splitHeldout, type DemoPromptSets } from "./prompts.js";
import { renderDemoReport } from "./report.js";
import { DemoError, resolveSettings, settingConflicts, SETTING_STAGE, type DemoSettings } from "./settings.js";
import {
  DEMO_STAGES, modelFingerprint, readJson, readStageMark, stagesDone, writeFileAtomic, writeJsonAtomic, writeStageMark,
  type DemoStage, type StageMark,
} from "./stages.js";

export { DEMO_STAGES, type DemoStage } from "./stages.js";

export const STAGE_TITLES: Record<DemoStage, string> = {
  pairs: "generate candidate pairs from the base model",
  label: "label the pairs with the reward (AI feedback)",
  train: "train with Diffusion-DPO",
  eval: "evaluate tuned vs base on held-out captions",
  report: "write the report",
};

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
  targets: Target[];
  /** Seconds each stage took when it ran, and their sum. */
  stageSeconds: Record<DemoStage, number>;
  totalSeconds: number;
  /** Stages this call skipped because they were done. */
  skipped: DemoStage[];
}

interface SavedRun {
  settings: DemoSettings;
  baseModelFingerprint: string;
  command: string | null;
  createdAt: string;
}

const EVAL_PHASE_LABEL: Record<EvalPhase, string> = {
  "sample-base": "base samples",
  "sample-tuned": "tuned samples",
  score: "scoring",
  "best-of-n": "best-of-n",
  implicit: "implicit accuracy",
  write: "writing",
};

/** Paths of the files a demo run writes under `out`. */
export function demoPaths(out: string) {
  return {
    settings: join(out, "demo.json"),
    pairs: join(out, "pairs.sqlite"),
    heldoutPairs: join(out, "heldout-pairs.sqlite"),
    train: join(out, "train"),
    eval: join(out, "eval"),
    report: join(out, "report.html"),
    summary: join(out, "summary.json"),
  };
}

function mean(xs: number[]): number | null {
  const v = xs.filter((x) => Number.isFinite(x));
  return v.length === 0 ? null : v.reduce((a, b) => a + b, 0) / v.length;
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
    settings = resolveSettings({ ...settings, ...given });
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
  const { evalPrompts, pairPrompts } = splitHeldout(sets.heldout, settings.evalPrompts, settings.heldoutPairsPrompts);

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
  const pairs = await stage<PairsStageSummary>("pairs",
    (s) => `${s.trainPairs} training pairs over ${s.trainPrompts} captions, ${s.heldoutPairs} held-out pairs over ${s.heldoutPrompts} captions`,
    async () => {
      const model = loadModelFolder(settings.model);
      const trainStore = new PreferenceStore(paths.pairs);
      const heldStore = new PreferenceStore(paths.heldoutPairs);
      try {
        const total = settings.k * (trainPrompts.length + pairPrompts.length);
        let offset = 0;
        let already = 0;
        const common = {
          model, modelName: resolve(settings.model), k: settings.k, seed: settings.seed, sampler: settings.sampler,
          steps: settings.sampleSteps, guidance: settings.guidance, pairing: settings.pairing, batchSize: 16,
        };
        const run = (prompts: string[], store: PreferenceStore, what: string) => generatePairs({
          ...common, prompts, store,
          onEvent: (e) => {
            if (e.type === "plan") {
              already = prompts.length * settings.k - e.imagesToGenerate;
              emit({ type: "progress", stage: "pairs", label: "candidates", done: offset + already, total, detail: what });
            } else if (e.type === "images") {
              emit({ type: "progress", stage: "pairs", label: "candidates", done: offset + already + e.generated, total, detail: what });
            }
          },
        });
        const a = await run(trainPrompts, trainStore, "training captions");
        offset += trainPrompts.length * settings.k;
        const b = await run(pairPrompts.map((p) => p.prompt), heldStore, "held-out captions");
        return {
          trainPrompts: a.prompts, heldoutPrompts: b.prompts, trainPairs: a.pairs, heldoutPairs: b.pairs,
          imagesGenerated: a.imagesGenerated + b.imagesGenerated,
        };
      } finally {
        trainStore.close();
        heldStore.close();
        disposeTextToImageModel(model);
      }
    });

  // ---- 2. label ----
  const labels = await stage<LabelStageSummary>("label",
    (s) => `${s.reward}: training pairs ${s.train.a + s.train.b} decided, ${s.train.ties} ties; held-out ${s.heldout.a + s.heldout.b} decided, ${s.heldout.ties} ties`,
    async () => {
      const reward = loadReward(settings.labelReward);
      try {
        const label = async (db: string, what: string) => {
          const store = new PreferenceStore(db);
          try {
            return await labelPairs({
              store, reward, margin: 0,
              onEvent: (e) => {
                if (e.type === "batch") emit({ type: "progress", stage: "label", label: `label ${what}`, done: e.labelled, total: e.total });
              },
            });
          } finally {
            store.close();
          }
        };
        const train = await label(paths.pairs, "training pairs");
        const heldout = await label(paths.heldoutPairs, "held-out pairs");
        return { reward: reward.name, train, heldout };
      } finally {
        reward.dispose?.();
      }
    });

  // ---- 3. train ----
  const train = await stage<TrainStageSummary>("train",
    (s) => `${s.steps} steps${s.finalLoss !== null ? `, final loss ${s.finalLoss.toFixed(4)}` : ""}${s.finalImplicitAcc !== null ? `, training implicit acc ${(100 * s.finalImplicitAcc).toFixed(1)}%` : ""}`,
    () => trainStage(settings, paths, emit));

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
  };
  await stage<{ report: string; summary: string }>("report", (s) => s.report, async () => {
    const evalJson = readJson<EvalJson>(join(paths.eval, "eval.json"));
    const stageSeconds = Object.fromEntries(DEMO_STAGES.map((s) => [s, marks[s]?.seconds ?? 0])) as Record<DemoStage, number>;
    const html = renderDemoReport(evalJson, {
      evalDir: paths.eval, run: readRunLog(paths.train), settings, pairs, labels, train, targets, stageSeconds,
      command: readJson<SavedRun>(paths.settings).command,
    });
    writeFileAtomic(paths.report, html);
    return { report: paths.report, summary: paths.summary };
  });
  const stageSeconds = Object.fromEntries(DEMO_STAGES.map((s) => [s, marks[s]?.seconds ?? 0])) as Record<DemoStage, number>;
  const summary: DemoSummary = {
    ...partial, stageSeconds, totalSeconds: Object.values(stageSeconds).reduce((a, b) => a + b, 0), skipped,
  };
  writeJsonAtomic(paths.summary, summary);
  emit({ type: "done", summary });
  return summary;
}

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

type Emit = (e: DemoEvent) => void;

/** Stage 3: DpoTrainer on the labelled training store; resumes from <out>/train's latest checkpoint. */
async function trainStage(settings: DemoSettings, paths: ReturnType<typeof demoPaths>, emit: Emit): Promise<TrainStageSummary> {
  const trainDir = paths.train;
  const checkpoints = listCheckpoints(trainDir);
  const last = checkpoints[checkpoints.length - 1];
  const metricsPath = join(trainDir, "metrics.jsonl");
  if (last === undefined) {
    // a fresh start: drop the log of an attempt that died before its first checkpoint
    rmSync(metricsPath, { force: true });
  } else if (existsSync(metricsPath)) {
    // the resumed trainer repeats the steps after the checkpoint: keep the log up to it
    const kept = readFileSync(metricsPath, "utf8").split("\n").filter((line) => {
      if (line.trim() === "") return false;
      try {
        const r = JSON.parse(line) as { step?: unknown };
        return typeof r.step !== "number" || r.step <= last[0];
      } catch {
        return false;
      }
    });
    writeFileSync(metricsPath, kept.length > 0 ? `${kept.join("\n")}\n` : "");
  }
  const data = openPreferenceData(paths.pairs, { format: "sqlite", dropTies: true });
  let usablePairs = 0;
  for await (const _ of data.pairs()) usablePairs++;
  if (usablePairs < settings.batch) {
    await data.close();
    throw new DemoError(`${paths.pairs}: ${usablePairs} usable (labelled, untied) pairs, fewer than one batch of ${settings.batch}; give more --pairs-prompts or a larger --k`);
  }
  const model = loadModelFolder(settings.model);
  let trainer: DpoTrainer | null = null;
  try {
    const schedule = new NoiseSchedule(model.scheduler);
    // the model's own target (the emoji recipe predicts v), as the train command does
    const predictionType = schedule.predictionType;
    if (predictionType !== "epsilon" && predictionType !== "v_prediction") {
      throw new DemoError(`${settings.model}: its scheduler predicts "${predictionType}"; Diffusion-DPO training supports epsilon and v_prediction`);
    }
    const cfg: TrainConfig = loadTrainConfig({
      flags: {
        model: settings.model, outputDir: trainDir, predictionType, method: "dpo", beta: settings.beta, finetune: settings.finetune,
        lora: { rank: settings.loraRank, alpha: settings.loraAlpha }, learningRate: settings.lr, scaleLr: false,
        batchSize: settings.batch, gradientAccumulation: 1, maxSteps: settings.steps, warmupSteps: Math.min(settings.warmup, settings.steps),
        lrSchedule: "constant_with_warmup", seed: settings.seed, promptDropout: settings.promptDropout,
        checkpointEvery: settings.checkpointEvery, keepCheckpoints: 2, resume: last !== undefined, logEvery: 1,
        data: { path: paths.pairs, format: "sqlite", workers: 0 },
      },
    });
    const resolution = defaultImageSize(model);
    const loader = data.loader({ batchSize: cfg.batchSize, augment: { resolution, crop: cfg.data.crop, flip: cfg.data.flip }, seed: cfg.seed, workers: 0 });
    const source = new LoaderBatchSource(loader, cfg.batchSize);
    model.textEncoder.requiresGrad(false).eval();
    model.vae?.requiresGrad(false).eval();
    model.unet.train();
    let adapters;
    if (cfg.finetune === "lora") {
      injectLora(model.unet, { rank: cfg.lora.rank, alpha: cfg.lora.alpha, targets: cfg.lora.targets });
      adapters = loraAdapters(model.unet);
    }
    const vae = model.vae;
    const log = jsonlMetricsLog(metricsPath);
    let resumedFrom: string | null = null;
    let startStep = 0;
    let trainable = 0;
    let effectiveBatch = cfg.batchSize;
    trainer = new DpoTrainer({
      config: cfg, model: model.unet, adapters, schedule, data: source,
      encodePrompts: (ps) => encodePrompts(model, ps),
      encodeImages: vae ? (px, noise) => vae.encodeLatents(px, noise) : undefined,
      saveFinal: cfg.finetune === "full" ? (dir) => saveModelFolder(dir, model) : undefined,
      onEvent: (e) => {
        log(e);
        if (e.type === "start") {
          resumedFrom = e.resumedFrom;
          startStep = e.step;
          trainable = e.trainableParameters;
          effectiveBatch = e.effectiveBatch;
          emit({
            type: "log", stage: "train",
            message: `${e.resumedFrom !== null ? `resuming from ${e.resumedFrom} (step ${e.step}); ` : ""}DPO β=${cfg.beta} ${cfg.finetune}` +
              `${cfg.finetune === "lora" ? ` r=${cfg.lora.rank}` : ""}, ${e.trainableParameters.toLocaleString("en-US")} trainable parameters, ` +
              `${usablePairs} pairs, batch ${e.effectiveBatch}, lr ${cfg.learningRate}. The loss starts at ln 2 ≈ 0.693.`,
          });
        } else if (e.type === "step") {
          emit({
            type: "progress", stage: "train", label: "DPO steps", done: e.step, total: e.maxSteps,
            detail: `loss ${e.metrics.loss.toFixed(4)} acc ${Number.isFinite(e.metrics.implicitAcc) ? e.metrics.implicitAcc.toFixed(2) : "—"}`,
          });
        } else if (e.type === "warning") {
          emit({ type: "log", stage: "train", message: `warning: ${e.message}` });
        }
      },
    });
    const result = await trainer.run();
    if (result.finalPath === null) throw new Error(`training stopped at step ${result.step} of ${cfg.maxSteps} without final weights`);
    const steps = readRunLog(trainDir).steps;
    const tail = steps.slice(Math.floor(steps.length * 0.9));
    const col = (k: string) => mean(tail.map((r) => r[k]).filter((v): v is number => typeof v === "number"));
    void startStep;
    return {
      steps: result.step, finalPath: result.finalPath, resumedFrom, trainableParameters: trainable, effectiveBatch, usablePairs,
      finalLoss: col("loss"), finalImplicitAcc: col("implicitAcc"), pairsPerSec: col("pairsPerSec"),
    };
  } finally {
    trainer?.dispose();
    await data.close();
    disposeTextToImageModel(model);
  }
}

/** Stage 4: evaluate() of the tuned run against the base on the held-out captions. */
async function evalStage(
  settings: DemoSettings, paths: ReturnType<typeof demoPaths>, prompts: { prompt: string; category?: string }[],
  loadReward: (spec: string) => RewardModel, emit: Emit,
): Promise<EvalStageSummary> {
  const rewards: RewardModel[] = [];
  const models = loadModelPair(settings.model, paths.train);
  try {
    for (const name of [settings.labelReward, ...settings.otherRewards]) rewards.push(loadReward(name));
    const names = rewards.map((r) => r.name);
    if (new Set(names).size !== names.length) throw new Error(`demo: the rewards' names repeat (${names.join(", ")})`);
    const result = await evaluate({
      models, prompts, promptSource: `held-out emoji captions (${prompts.length})`,
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
    return {
      winRate,
      implicitAccuracy: ia === null ? null : { accuracy: ia.accuracy, interval: ia.interval, pairs: ia.pairs, draws: ia.draws },
      diversity: d === null ? null : { base: d.base, tuned: d.tuned, change: d.base > 0 ? d.tuned / d.base - 1 : Number.NaN },
    };
  } finally {
    models.dispose();
    for (const r of rewards) r.dispose?.();
  }
}
