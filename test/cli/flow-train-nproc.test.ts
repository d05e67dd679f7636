// `train --nproc 2` on the SD3 reference folder: two data-parallel Flow-DPO workers, one JSON summary.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brightJsonl } from "./train-fixture.js";
import { referenceCase } from "../_reference.js";

test("--nproc 2 on an SD3 folder: two Flow-DPO workers, rank 0's summary and metrics only", async () => {
  const dir = mkdtempSync(join(tmpdir(), "flow-nproc-"));
  const folder = referenceCase("sd3-pipeline").pipelineFolder();
  try {
    const pairs = await brightJsonl(join(dir, "data"), 4, 64);
    const out = join(dir, "run");
    const env: NodeJS.ProcessEnv = { ...process.env, DDPO_THREADS: "1" };
    delete env.RANK;
    delete env.WORLD_SIZE;
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", "train", "--model", folder, "--data", pairs, "--out", out, "--steps", "2", "--batch", "1",
        "--resolution", "64", "--workers", "0", "--lora", "--lora-rank", "2", "--nproc", "2", "--json"],
      { encoding: "utf8", timeout: 240_000, env },
    );
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.length, 1, `one JSON line on stdout, got: ${r.stdout}`);
    const summary = JSON.parse(lines[0]!) as { step: number; processes: number; last: { loss: number } };
    assert.equal(summary.processes, 2);
    assert.equal(summary.step, 2);
    assert.ok(Number.isFinite(summary.last.loss));
    assert.match(r.stderr, /Flow-DPO.*effective batch 2, .*2 processes/);
    const steps = readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").filter((l) => l.includes('"type":"step"'));
    assert.equal(steps.length, 2, "only rank 0 writes the metrics log");
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(folder, { recursive: true, force: true });
  }
});
