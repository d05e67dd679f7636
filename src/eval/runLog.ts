// Reading a training run for the report: the JSONL metrics log written by src/train/events.ts
// `jsonlMetricsLog` (one JSON object per line; step lines carry loss, implicitAcc, margin, lr, …;
// null where a metric was not computed) and the run's resolved training config.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { latestCheckpoint } from "../train/checkpoint.js";

/** One step line of the metrics log (metrics not computed are null). */
export interface StepRecord {
  step: number;
  [metric: string]: number | null;
}

export interface RunLog {
  /** The metrics file read, or null when the run has none. */
  metricsPath: string | null;
  steps: StepRecord[];
  /** The run's training config (config.json / training_config.json), or null. */
  config: unknown;
  configPath: string | null;
}

/** Parses JSONL metrics text; non-step lines are skipped, a malformed line is an error naming it. */
export function parseMetricsLog(text: string, where: string): StepRecord[] {
  const out: StepRecord[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === "") return;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (err) {
      throw new Error(`${where}: line ${i + 1} is not JSON (${(err as Error).message})`);
    }
    if (rec === null || typeof rec !== "object") return;
    const r = rec as Record<string, unknown>;
    if (r.type !== undefined && r.type !== "step") return;
    if (typeof r.step !== "number") return;
    const step: StepRecord = { step: r.step };
    for (const [k, v] of Object.entries(r)) {
      if (k === "step" || k === "type" || k === "time") continue;
      if (typeof v === "number" || v === null) step[k] = v;
    }
    out.push(step);
  });
  return out;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`${path} is not valid JSON (${(err as Error).message})`);
  }
}

/**
 * A run folder (or a metrics .jsonl file): metrics from metrics.jsonl, else the folder's only
 * *.jsonl file, else logs/metrics.jsonl; the config from config.json, training_config.json,
 * final/training_config.json or the latest checkpoint's config.json.
 */
export function readRunLog(spec: string): RunLog {
  if (!existsSync(spec)) throw new Error(`run ${spec} does not exist (give the training output folder or its metrics .jsonl file)`);
  let metricsPath: string | null = null;
  let dir: string;
  if (statSync(spec).isDirectory()) {
    dir = spec;
    const jsonl = readdirSync(dir).filter((n) => n.endsWith(".jsonl"));
    if (jsonl.includes("metrics.jsonl")) metricsPath = join(dir, "metrics.jsonl");
    else if (jsonl.length === 1) metricsPath = join(dir, jsonl[0]!);
    else if (existsSync(join(dir, "logs", "metrics.jsonl"))) metricsPath = join(dir, "logs", "metrics.jsonl");
  } else {
    metricsPath = spec;
    dir = join(spec, "..");
  }
  const steps = metricsPath === null ? [] : parseMetricsLog(readFileSync(metricsPath, "utf8"), metricsPath);
  const candidates = [join(dir, "config.json"), join(dir, "training_config.json"), join(dir, "final", "training_config.json")];
  const ck = existsSync(join(dir, "checkpoints")) ? latestCheckpoint(dir) : null;
  if (ck !== null) candidates.push(join(ck, "config.json"));
  const configPath = candidates.find((p) => existsSync(p)) ?? null;
  return { metricsPath, steps, config: configPath === null ? null : readJson(configPath), configPath };
}
