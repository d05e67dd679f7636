// The demo's output folder bookkeeping: the settings file and one "done" mark per stage.
//
//   <out>/demo.json               the resolved settings (and the base model's fingerprint)
//   <out>/stages/<stage>.json     written when, and only when, a stage has finished: its summary
//
// Every file is written to a temporary name and renamed into place, so a killed process leaves
// either the old file or the new one, never half of one; a stage without its mark is redone
// (and the stages below it do only the work that is missing: see runDemo).
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";

export const DEMO_STAGES = ["pairs", "label", "train", "eval", "report"] as const;
export type DemoStage = (typeof DEMO_STAGES)[number];

/** Writes a file atomically (temporary file in the same folder, then rename). */
export function writeFileAtomic(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, `${JSON.stringify(value, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2)}\n`);
}

export function readJson<T>(path: string): T {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch (err) {
    throw new Error(`${path} is not valid JSON (${(err as Error).message}); delete it to redo what it records`);
  }
}

export function stageMarkPath(out: string, stage: DemoStage): string {
  return join(out, "stages", `${stage}.json`);
}

export interface StageMark<S = unknown> {
  stage: DemoStage;
  /** Seconds the stage took when it ran (not counting earlier interrupted attempts). */
  seconds: number;
  finishedAt: string;
  summary: S;
}

export function readStageMark<S>(out: string, stage: DemoStage): StageMark<S> | null {
  const p = stageMarkPath(out, stage);
  return existsSync(p) ? readJson<StageMark<S>>(p) : null;
}

export function writeStageMark<S>(out: string, stage: DemoStage, seconds: number, summary: S): StageMark<S> {
  const mark: StageMark<S> = { stage, seconds, finishedAt: new Date().toISOString(), summary };
  writeJsonAtomic(stageMarkPath(out, stage), mark);
  return mark;
}

export function stagesDone(out: string): DemoStage[] {
  return DEMO_STAGES.filter((s) => existsSync(stageMarkPath(out, s)));
}

/**
 * A fingerprint of a diffusers model folder: SHA-256 over the relative path and bytes of every
 * file of its components (model_index.json, unet/, text_encoder/, tokenizer/, scheduler/, vae/),
 * so a model retrained in place is noticed; model cards, images and other files are ignored.
 */
export function modelFingerprint(dir: string): string {
  const h = createHash("sha256");
  const files: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else files.push(p);
    }
  };
  if (existsSync(join(dir, "model_index.json"))) files.push(join(dir, "model_index.json"));
  for (const c of ["unet", "text_encoder", "tokenizer", "scheduler", "vae"]) if (existsSync(join(dir, c))) walk(join(dir, c));
  if (files.length === 0) throw new Error(`${dir} is not a diffusers model folder (no model_index.json, unet/, text_encoder/ …)`);
  for (const f of files) {
    h.update(relative(dir, f));
    h.update("\u0000");
    h.update(readFileSync(f));
  }
  return h.digest("hex").slice(0, 16);
}
