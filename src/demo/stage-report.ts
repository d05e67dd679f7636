// Stage 5: <out>/report.html, the evaluation report with the demo's own section on top.
import { join } from "node:path";
import type { EvalJson } from "../eval/evalJson.js";
import { readRunLog } from "../eval/runLog.js";
import { renderDemoReport } from "./report.js";
import type { DemoSettings } from "./settings.js";
import { DEMO_STAGES, readJson, writeFileAtomic, type DemoStage, type StageMark } from "./stages.js";
import type { DemoPaths, LabelStageSummary, PairsStageSummary, Target, TrainStageSummary } from "./types.js";

export interface ReportStageInput {
  settings: DemoSettings;
  pairs: PairsStageSummary;
  labels: LabelStageSummary;
  train: TrainStageSummary;
  targets: Target[];
  /** The finished stages' marks (their seconds go into the report). */
  marks: Partial<Record<DemoStage, StageMark>>;
  /** The command line saved with the run. */
  command: string | null;
  roundWinRates?: { round: number; rate: number; interval: [number, number]; n: number }[];
}

export async function reportStage(paths: DemoPaths, input: ReportStageInput): Promise<{ report: string; summary: string }> {
  const { settings, pairs, labels, train, targets, marks, command, roundWinRates } = input;
  const evalJson = readJson<EvalJson>(join(paths.eval, "eval.json"));
  const stageSeconds = Object.fromEntries(DEMO_STAGES.map((s) => [s, marks[s]?.seconds ?? 0])) as Record<DemoStage, number>;
  const html = renderDemoReport(evalJson, {
    evalDir: paths.eval, run: readRunLog(paths.train), settings, pairs, labels, train, targets, stageSeconds,
    command, ...(roundWinRates !== undefined ? { roundWinRates } : {}),
  });
  writeFileAtomic(paths.report, html);
  return { report: paths.report, summary: paths.summary };
}
