// Stage 3: Diffusion-DPO on the labelled training store (LoRA by default) into <out>/train;
// an unfinished run resumes from its latest checkpoint (the trainer's exact resume).
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadTrainConfig, type TrainConfig } from "../config/train.js";
import { openPreferenceData } from "../data/open.js";
import { NoiseSchedule } from "../diffusion/index.js";
import { readRunLog } from "../eval/runLog.js";
import { disposeTextToImageModel, loadModelFolder } from "../models/pipeline.js";
import { listCheckpoints } from "../train/checkpoint.js";
import { jsonlMetricsLog } from "../train/events.js";
import { initWeightsFrom } from "../eval/init-from.js";
import { buildTrainingRun, type TrainingRun } from "../train/run.js";
import { DemoError, type DemoSettings } from "./settings.js";
import type { DemoPaths, Emit, TrainStageSummary } from "./types.js";

export function trainHeadline(s: TrainStageSummary): string {
  return `${s.steps} steps${s.finalLoss !== null ? `, final loss ${s.finalLoss.toFixed(4)}` : ""}${s.finalImplicitAcc !== null ? `, training implicit acc ${(100 * s.finalImplicitAcc).toFixed(1)}%` : ""}`;
}

function mean(xs: number[]): number | null {
  const v = xs.filter((x) => Number.isFinite(x));
  return v.length === 0 ? null : v.reduce((a, b) => a + b, 0) / v.length;
}

/** Stage 3: DpoTrainer on the labelled training store; resumes from <out>/train's latest checkpoint. */
/** The training config the demo's settings give (the same schema `diffusion-dpo train --config` reads). */
export function demoTrainConfig(
  settings: DemoSettings, paths: Pick<DemoPaths, "train" | "pairs">, predictionType: "epsilon" | "v_prediction", resume: boolean,
): TrainConfig {
  return loadTrainConfig({
    flags: {
      model: settings.model, outputDir: paths.train, predictionType, method: "dpo", beta: settings.beta, sftWeight: settings.sftWeight, finetune: settings.finetune,
      lora: { rank: settings.loraRank, alpha: settings.loraAlpha }, learningRate: settings.lr, scaleLr: false,
      batchSize: settings.batch, gradientAccumulation: 1, maxSteps: settings.steps, warmupSteps: Math.min(settings.warmup, settings.steps),
      lrSchedule: "constant_with_warmup", seed: settings.seed, promptDropout: settings.promptDropout,
      checkpointEvery: settings.checkpointEvery, keepCheckpoints: 2, resume, logEvery: 1,
      data: { path: paths.pairs, format: "sqlite", workers: 0 },
    },
  });
}

/**
 * Trains on paths.pairs into paths.train; `initFrom` (a later round) starts from an earlier run's
 * final weights, the reference staying the base model.
 */
export async function trainStage(
  settings: DemoSettings, paths: Pick<DemoPaths, "train" | "pairs">, emit: Emit, initFrom: string | null = null,
): Promise<TrainStageSummary> {
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
  let run: TrainingRun | null = null;
  try {
    const schedule = new NoiseSchedule(model.scheduler);
    // the model's own target (the emoji recipe predicts v), as the train command does
    const predictionType = schedule.predictionType;
    if (predictionType !== "epsilon" && predictionType !== "v_prediction") {
      throw new DemoError(`${settings.model}: its scheduler predicts "${predictionType}"; Diffusion-DPO training supports epsilon and v_prediction`);
    }
    const cfg = demoTrainConfig(settings, paths, predictionType, last !== undefined);
    const log = jsonlMetricsLog(metricsPath);
    let resumedFrom: string | null = null;
    let startStep = 0;
    let trainable = 0;
    let effectiveBatch = cfg.batchSize;
    run = await buildTrainingRun({
      model, config: cfg, data: { pairs: data },
      ...(initFrom !== null ? { prepareUNet: (unet) => initWeightsFrom(unet, initFrom, settings.finetune) } : {}),
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
    const result = await run.run();
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
    await run?.dispose();
    await data.close();
    disposeTextToImageModel(model);
  }
}
