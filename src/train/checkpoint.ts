// Training checkpoints: one folder per saved step, written atomically, newest N kept.
//
//   <outputDir>/checkpoints/step-000500/
//       model.safetensors       trainable weights: the full model's state dict, or the LoRA weights
//       optimizer.safetensors   optimizer state tensors ("<param>.<slot>")
//       trainer_state.json      step, data position, generator state, optimizer meta, counters
//       config.json             the resolved training config
//
// Atomicity: everything is written (and fsynced) into a hidden temporary folder beside the final
// one, which is renamed into place last. A process killed mid-write (even with SIGKILL) leaves at
// most a `.step-…tmp-…` folder, which `latestCheckpoint` never picks and `cleanTemporaryCheckpoints`
// removes; the previous checkpoint is untouched.
//
// The folder mechanics (writeCheckpointFolder, listCheckpoints, latestCheckpoint, pruneCheckpoints,
// cleanTemporaryCheckpoints) serve every trainer that checkpoints: a folder counts as a checkpoint
// once its marker file (written last) is there — trainer_state.json for Diffusion-DPO, state.json
// for pretraining (src/train/pretrain.ts: weights, ema, optimizer .safetensors + state.json).
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Tensor } from "../tensor/index.js";
import type { OptimizerState } from "../optim/index.js";
import { readSafetensorsSync, writeSafetensorsSync } from "../io/safetensors.js";

export const CHECKPOINT_DIR = "checkpoints";
const STEP_DIR = /^step-(\d+)$/;

export interface TrainerState {
  /** Optimizer steps completed. */
  step: number;
  /** Micro-batches consumed from the data source (the next batch index). */
  batchIndex: number;
  /** The step generator's state, base64 (libtorch's CPU generator state bytes). */
  generator: string;
  optimizer: OptimizerState["meta"];
  skippedSteps: number;
  /** "full" weights or "lora" adapters in model.safetensors. */
  weights: "full" | "lora";
  /** A streaming data source's own position (PairBatchSource.state()), when it has one. */
  data?: unknown;
  /** Processes of the data-parallel run that wrote it (absent: 1); a resume needs the same number. */
  worldSize?: number;
  /** Data parallel: each rank's data source position, in rank order (data holds rank 0's). */
  dataByRank?: unknown[];
  /** Library version that wrote it, for messages. */
  writer: string;
}

export interface CheckpointContents {
  path: string;
  state: TrainerState;
  weights: Map<string, Tensor>;
  optimizer: OptimizerState;
  config: unknown;
}

export function stepDirName(step: number): string {
  return `step-${String(step).padStart(6, "0")}`;
}

function writeFileSynced(path: string, text: string): void {
  const fd = openSync(path, "w");
  try {
    const bytes = Buffer.from(text, "utf8");
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function fsyncDir(path: string): void {
  try {
    const fd = openSync(path, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // some file systems do not allow fsync on directories; the rename is still atomic
  }
}

/** The file whose presence makes a Diffusion-DPO checkpoint folder complete (written last). */
export const TRAINER_STATE_FILE = "trainer_state.json";

/** One file of a checkpoint: its name in the folder and how to write it there. */
export interface CheckpointFile {
  name: string;
  write(path: string): void;
}

/** A JSON file of a checkpoint, written and fsynced. */
export function jsonCheckpointFile(name: string, value: unknown, indent = 2): CheckpointFile {
  return { name, write: (path) => writeFileSynced(path, `${JSON.stringify(value, null, indent)}\n`) };
}

export interface CheckpointFolderInput {
  outputDir: string;
  step: number;
  /** Written in order; the last one must be `marker`. */
  files: CheckpointFile[];
  /** The file that makes the folder a checkpoint. */
  marker: string;
  /** Keep the newest N checkpoints (0 keeps all). */
  keep: number;
  /** Test seam: called after each file is written into the temporary folder, after the rename and while pruning. */
  afterFile?: (name: string) => void;
}

/** Writes <outputDir>/checkpoints/step-NNNNNN atomically (temporary folder, then rename), prunes old ones, returns the folder. */
export function writeCheckpointFolder(input: CheckpointFolderInput): string {
  if (input.files[input.files.length - 1]?.name !== input.marker) {
    throw new Error(`writeCheckpointFolder: the marker ${input.marker} must be the last file written`);
  }
  const root = join(input.outputDir, CHECKPOINT_DIR);
  mkdirSync(root, { recursive: true });
  const name = stepDirName(input.step);
  const final = join(root, name);
  const tmp = join(root, `.${name}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  mkdirSync(tmp);
  try {
    for (const file of input.files) {
      file.write(join(tmp, file.name));
      input.afterFile?.(file.name);
    }
    fsyncDir(tmp);
    if (existsSync(final)) rmSync(final, { recursive: true, force: true });
    renameSync(tmp, final);
    fsyncDir(root);
    input.afterFile?.("renamed");
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  if (input.keep > 0) pruneCheckpoints(input.outputDir, input.keep, input.afterFile, input.marker);
  return final;
}

export interface SaveCheckpointInput {
  outputDir: string;
  state: TrainerState;
  weights: Map<string, Tensor>;
  optimizer: OptimizerState;
  config: unknown;
  /** Keep the newest N checkpoints (0 keeps all). */
  keep: number;
  /** Test seam: called after each file is written into the temporary folder. */
  afterFile?: (name: string) => void;
}

/** Writes a Diffusion-DPO checkpoint atomically, prunes old ones, returns the final folder. */
export function saveCheckpoint(input: SaveCheckpointInput): string {
  const meta = { format: "diffusion-dpo checkpoint", step: String(input.state.step) };
  return writeCheckpointFolder({
    outputDir: input.outputDir,
    step: input.state.step,
    marker: TRAINER_STATE_FILE,
    keep: input.keep,
    afterFile: input.afterFile,
    files: [
      { name: "model.safetensors", write: (path) => writeSafetensorsSync(path, input.weights, { ...meta, weights: input.state.weights }) },
      { name: "optimizer.safetensors", write: (path) => writeSafetensorsSync(path, input.optimizer.tensors, meta) },
      jsonCheckpointFile("config.json", input.config),
      // trainer_state.json last: a folder without it is never a checkpoint
      jsonCheckpointFile(TRAINER_STATE_FILE, input.state),
    ],
  });
}

/** Completed checkpoints (folders holding `marker`), oldest first, as [step, path]. */
export function listCheckpoints(outputDir: string, marker = TRAINER_STATE_FILE): [number, string][] {
  const root = join(outputDir, CHECKPOINT_DIR);
  if (!existsSync(root)) return [];
  const out: [number, string][] = [];
  for (const entry of readdirSync(root)) {
    const m = STEP_DIR.exec(entry);
    if (m === null) continue;
    const path = join(root, entry);
    if (!existsSync(join(path, marker))) continue;
    out.push([Number(m[1]), path]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

/** The newest completed checkpoint folder under `outputDir`, or null. */
export function latestCheckpoint(outputDir: string, marker = TRAINER_STATE_FILE): string | null {
  const all = listCheckpoints(outputDir, marker);
  return all.length === 0 ? null : all[all.length - 1]![1];
}

/**
 * Removes all but the newest `keep` checkpoints. Each goes out of the checkpoint namespace by an
 * atomic rename to a temporary name first, so a process killed while deleting never leaves a
 * half-deleted folder that still looks like a checkpoint (cleanTemporaryCheckpoints removes it).
 */
export function pruneCheckpoints(outputDir: string, keep: number, afterStep?: (name: string) => void, marker = TRAINER_STATE_FILE): string[] {
  const all = listCheckpoints(outputDir, marker);
  const removed: string[] = [];
  for (const [step, path] of all.slice(0, Math.max(0, all.length - keep))) {
    const doomed = join(outputDir, CHECKPOINT_DIR, `.${stepDirName(step)}.tmp-prune-${process.pid}-${randomBytes(4).toString("hex")}`);
    renameSync(path, doomed);
    afterStep?.("prune-renamed");
    rmSync(doomed, { recursive: true, force: true });
    removed.push(path);
  }
  afterStep?.("pruned");
  return removed;
}

/**
 * Removes temporary folders left by an interrupted save or prune (`.step-N.tmp-…`, and the
 * `step-N.tmp-<pid>` that pretraining wrote before it used writeCheckpointFolder). Returns them.
 */
export function cleanTemporaryCheckpoints(outputDir: string): string[] {
  const root = join(outputDir, CHECKPOINT_DIR);
  if (!existsSync(root)) return [];
  const removed: string[] = [];
  for (const entry of readdirSync(root)) {
    if (/^\.?step-\d+\.tmp-/.test(entry)) {
      rmSync(join(root, entry), { recursive: true, force: true });
      removed.push(join(root, entry));
    }
  }
  return removed;
}

/** Reads a checkpoint folder; errors name the folder and the file. */
export function loadCheckpoint(path: string): CheckpointContents {
  const need = ["trainer_state.json", "model.safetensors", "optimizer.safetensors", "config.json"];
  for (const f of need) {
    if (!existsSync(join(path, f))) {
      throw new Error(`checkpoint ${path} is incomplete: ${f} is missing. Resume from an earlier checkpoint or start over.`);
    }
  }
  const parse = (f: string): unknown => {
    try {
      return JSON.parse(readFileSync(join(path, f), "utf8")) as unknown;
    } catch (err) {
      throw new Error(`checkpoint ${path}: ${f} is not valid JSON (${(err as Error).message})`);
    }
  };
  const state = parse("trainer_state.json") as TrainerState;
  for (const key of ["step", "batchIndex", "skippedSteps"] as const) {
    if (!Number.isInteger(state[key])) throw new Error(`checkpoint ${path}: trainer_state.json has no integer "${key}"`);
  }
  const weights = readSafetensorsSync(join(path, "model.safetensors")).tensors;
  const opt = readSafetensorsSync(join(path, "optimizer.safetensors")).tensors;
  return { path, state, weights, optimizer: { tensors: opt, meta: state.optimizer }, config: parse("config.json") };
}

export function encodeBytes(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}
export function decodeBytes(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, "base64"));
}
