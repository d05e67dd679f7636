// `train --nproc 2` as a user runs it: a child process that relaunches itself as two workers
// (torchrun's variables), trains data-parallel, and prints one JSON summary on stdout.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brightJsonl, tinyModelFolder } from "./train-fixture.js";

test("--nproc 2 trains with two worker processes and prints one JSON summary (rank 0's)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "dpo-nproc-"));
  const model = tinyModelFolder(join(dir, "model"));
  const pairs = await brightJsonl(join(dir, "data"));
  const out = join(dir, "run");
  const env = { ...process.env };
  delete env.RANK;
  delete env.WORLD_SIZE;
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", "src/cli/main.ts", "train", "--model", model, "--data", pairs, "--out", out, "--steps", "2", "--batch", "1",
      "--lr", "1e-4", "--warmup", "0", "--workers", "0", "--lora", "--nproc", "2", "--json"],
    { encoding: "utf8", timeout: 240_000, env },
  );
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, `one JSON line on stdout, got: ${r.stdout}`);
  const summary = JSON.parse(lines[0]!) as { step: number; processes: number; last: { loss: number }; lastCheckpoint: string };
  assert.equal(summary.processes, 2);
  assert.equal(summary.step, 2);
  assert.ok(Number.isFinite(summary.last.loss));
  assert.match(r.stderr, /effective batch 2, .*2 processes/);
  const state = JSON.parse(readFileSync(join(summary.lastCheckpoint, "trainer_state.json"), "utf8")) as { worldSize?: number; dataByRank?: unknown[] };
  assert.equal(state.worldSize, 2);
  assert.equal(state.dataByRank?.length, 2, "each rank's data position is saved");
  const steps = readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").filter((l) => l.includes('"type":"step"'));
  assert.equal(steps.length, 2, "only rank 0 writes the metrics log");
});
