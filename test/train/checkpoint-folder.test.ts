// The one checkpoint writer every trainer uses (train/checkpoint.ts writeCheckpointFolder):
// atomic (temporary folder + rename), the marker file decides completeness, newest N kept by
// prune-by-rename, temporaries cleaned — with pretraining's marker (state.json) as well as DPO's.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CHECKPOINT_DIR, cleanTemporaryCheckpoints, jsonCheckpointFile, latestCheckpoint, listCheckpoints, writeCheckpointFolder,
  type CheckpointFile,
} from "../../src/train/checkpoint.js";
import { latestCheckpoint as latestPretrainCheckpoint } from "../../src/train/pretrain.js";

const textFile = (name: string, text: string): CheckpointFile => ({ name, write: (path) => writeFileSync(path, text) });

test("pretraining-style folders (state.json last): written whole, newest 2 kept, latest found by both readers", () => {
  const out = mkdtempSync(join(tmpdir(), "ckfolder-"));
  const seen: string[] = [];
  for (const step of [1, 2, 3]) {
    writeCheckpointFolder({
      outputDir: out, step, marker: "state.json", keep: 2, afterFile: (n) => seen.push(n),
      files: [textFile("weights.safetensors", `w${step}`), jsonCheckpointFile("state.json", { step }, 1)],
    });
  }
  assert.deepEqual(listCheckpoints(out, "state.json").map(([s]) => s), [2, 3]);
  assert.equal(latestPretrainCheckpoint(out), join(out, CHECKPOINT_DIR, "step-000003"));
  assert.equal(latestCheckpoint(out, "state.json"), latestPretrainCheckpoint(out));
  assert.equal(latestCheckpoint(out), null, "no trainer_state.json: not a DPO checkpoint");
  assert.deepEqual(JSON.parse(readFileSync(join(out, CHECKPOINT_DIR, "step-000003", "state.json"), "utf8")), { step: 3 });
  assert.deepEqual(readdirSync(join(out, CHECKPOINT_DIR)).sort(), ["step-000002", "step-000003"], "no temporaries left");
  // per save: each file, the rename, then pruning (the third save prunes step 1 by rename first)
  assert.deepEqual(seen.slice(0, 4), ["weights.safetensors", "state.json", "renamed", "pruned"]);
  assert.deepEqual(seen.slice(-5), ["weights.safetensors", "state.json", "renamed", "prune-renamed", "pruned"]);
});

test("a failed write leaves the previous checkpoint and no temporary; a folder without its marker does not count", () => {
  const out = mkdtempSync(join(tmpdir(), "ckfolder-"));
  writeCheckpointFolder({ outputDir: out, step: 5, marker: "state.json", keep: 0, files: [jsonCheckpointFile("state.json", { step: 5 })] });
  assert.throws(() => writeCheckpointFolder({
    outputDir: out, step: 6, marker: "state.json", keep: 0,
    files: [{ name: "weights.safetensors", write: () => { throw new Error("disk full"); } }, jsonCheckpointFile("state.json", { step: 6 })],
  }), /disk full/);
  assert.deepEqual(readdirSync(join(out, CHECKPOINT_DIR)), ["step-000005"]);
  mkdirSync(join(out, CHECKPOINT_DIR, "step-000007"));
  writeFileSync(join(out, CHECKPOINT_DIR, "step-000007", "weights.safetensors"), "partial");
  assert.deepEqual(listCheckpoints(out, "state.json").map(([s]) => s), [5]);
  assert.throws(
    () => writeCheckpointFolder({ outputDir: out, step: 8, marker: "state.json", keep: 0, files: [jsonCheckpointFile("config.json", {})] }),
    /marker state\.json must be the last file/,
  );
});

test("cleanTemporaryCheckpoints removes interrupted saves, including pretraining's old step-N.tmp-PID", () => {
  const out = mkdtempSync(join(tmpdir(), "ckfolder-"));
  const root = join(out, CHECKPOINT_DIR);
  for (const d of [".step-000004.tmp-123-abcd", ".step-000002.tmp-prune-9-ff", "step-000003.tmp-4567", "step-000001"]) mkdirSync(join(root, d), { recursive: true });
  const removed = cleanTemporaryCheckpoints(out).map((p) => p.slice(root.length + 1)).sort();
  assert.deepEqual(removed, [".step-000002.tmp-prune-9-ff", ".step-000004.tmp-123-abcd", "step-000003.tmp-4567"]);
  assert.deepEqual(readdirSync(root), ["step-000001"]);
});
