// The trainer's typed event stream, and two consumers that return text rather than print: a JSONL
// metrics log writer and a one-line progress formatter (the CLI draws the bar with it).
import { appendFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

/** Logged every step. Metrics that need the reference are NaN when no reference ran. */
export interface StepMetrics {
  /** Mean over the step's micro-batches of the preference loss (ln 2 ≈ 0.693 at initialisation for dpo). */
  loss: number;
  /** Fraction of pairs with inside > 0 (ties ½). */
  implicitAcc: number;
  /** 0.5·(mean Lw + mean Ll) of the policy ("mse/model"). */
  policyMse: number;
  /** The same for the frozen reference ("mse/ref"). */
  referenceMse: number;
  /** mean (Lw − Ll) − (Rw − Rl); negative means the policy prefers the chosen images more than the reference does. */
  margin: number;
  /** Global gradient L2 norm before clipping. */
  gradNorm: number;
  /** Learning rate used by this step's update. */
  lr: number;
  pairsPerSec: number;
  /** Steps skipped so far for non-finite values (onNonFinite: "skip"). */
  skippedSteps: number;
}

export type TrainEvent =
  | {
      type: "start";
      step: number;
      maxSteps: number;
      effectiveBatch: number;
      lr: number;
      trainableParameters: number;
      resumedFrom: string | null;
    }
  | { type: "step"; step: number; maxSteps: number; metrics: StepMetrics; elapsedSec: number; etaSec: number }
  | { type: "checkpoint"; step: number; path: string }
  | { type: "validation"; step: number; path: string }
  | { type: "warning"; step: number; code: "non-finite-skipped" | "temporary-removed" | "config" | "reference-cache"; message: string }
  /** Building the reference cache: pairs done so far (not written to metrics.jsonl). */
  | { type: "reference-cache-progress"; pairs: number; draws: number }
  /**
   * The reference cache is ready: "built" now or "reused" from an earlier call. `referenceFreedBytes`:
   * live tensor bytes released by freeing full fine-tuning's reference copy (null when none was freed).
   */
  | {
      type: "reference-cache"; step: number; path: string; action: "built" | "reused"; pairs: number; draws: number;
      seconds: number; referenceFreedBytes: number | null;
    }
  | { type: "done"; step: number; outputDir: string; finalPath: string; skippedSteps: number; elapsedSec: number };

/** An onEvent callback appending every step (and checkpoint/validation/warning/done) event as one JSON line. */
export function jsonlMetricsLog(path: string): (e: TrainEvent) => void {
  mkdirSync(dirname(path), { recursive: true });
  return (e) => {
    if (e.type === "start" || e.type === "reference-cache-progress") return;
    const record = e.type === "step" ? { type: e.type, step: e.step, time: Date.now(), ...e.metrics } : { ...e, time: Date.now() };
    // JSON has no NaN: write null for metrics that were not computed
    appendFileSync(path, `${JSON.stringify(record, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v))}\n`);
  };
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec)) return "?";
  const s = Math.max(0, Math.round(sec));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : m > 0 ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}

/** "step 120/2000 [██░░░░░░░░]  6% eta 3m20s loss 0.6921 acc 0.562" */
export function formatProgress(e: Extract<TrainEvent, { type: "step" }>, width = 10): string {
  const frac = Math.min(1, e.step / e.maxSteps);
  const filled = Math.round(frac * width);
  const bar = "█".repeat(filled) + "░".repeat(width - filled);
  const acc = Number.isFinite(e.metrics.implicitAcc) ? e.metrics.implicitAcc.toFixed(3) : "—";
  return `step ${e.step}/${e.maxSteps} [${bar}] ${String(Math.round(frac * 100)).padStart(3)}% eta ${formatDuration(e.etaSec)} loss ${e.metrics.loss.toFixed(4)} acc ${acc}`;
}
