import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listCheckpoints, loadCheckpoint, CHECKPOINT_DIR } from "../../src/train/checkpoint.js";
import type { TrainEvent } from "../../src/train/events.js";
import { MAX_STEPS, makeTrainer } from "./fixtures/resume-setup.js";

const tmp = (): string => mkdtempSync(join(tmpdir(), "dpo-resume-"));

let reference: number[] | null = null;
/** Per-step losses of the uninterrupted run. */
async function uninterrupted(): Promise<number[]> {
  if (reference === null) {
    const run = makeTrainer(tmp());
    const r = await run.trainer.run();
    reference = r.history.map((h) => h.metrics.loss);
    run.dispose();
    assert.equal(reference.length, MAX_STEPS);
    // warmup: step 1 updates with lr·0, so steps 1 and 2 both sit at ln 2; from then on every loss differs
    assert.equal(new Set(reference).size, MAX_STEPS - 1, `losses change from step to step: ${reference.join(", ")}`);
  }
  return reference;
}

test("a resumed run reproduces the uninterrupted run's per-step losses exactly", async () => {
  const full = await uninterrupted();
  const out = tmp();
  const first = makeTrainer(out, { stopAfterSteps: 3 });
  const a = await first.trainer.run();
  first.dispose();
  assert.deepEqual(a.history.map((h) => h.metrics.loss), full.slice(0, 3));
  assert.deepEqual(listCheckpoints(out).map(([s]) => s), [2, 3], "periodic checkpoint at 2, and one when the call stops at 3");

  const events: TrainEvent[] = [];
  const second = makeTrainer(out, { onEvent: (e) => events.push(e) });
  const b = await second.trainer.run();
  second.dispose();
  const start = events[0]!;
  assert.equal(start.type, "start");
  assert.equal((start as { resumedFrom: string }).resumedFrom, join(out, CHECKPOINT_DIR, "step-000003"));
  assert.deepEqual(b.history.map((h) => h.step), [4, 5, 6]);
  assert.deepEqual(b.history.map((h) => h.metrics.loss), full.slice(3), "steps 4–6 after resume");

  // resume: false ignores the checkpoints and starts over
  const fresh = makeTrainer(out, {}, { resume: false, maxSteps: 1, checkpointEvery: 0 });
  const c = await fresh.trainer.run();
  fresh.dispose();
  assert.deepEqual(c.history.map((h) => h.metrics.loss), full.slice(0, 1));
  await assert.rejects(makeTrainer(out, {}, { resume: join(out, "missing") }).trainer.run(), /does not exist/);
});

test("SIGKILL during a checkpoint write leaves the previous checkpoint loadable, and resuming from it reproduces the losses", async () => {
  const full = await uninterrupted();
  const out = tmp();
  const child = spawn(process.execPath, ["--import", "tsx", join("test", "train", "fixtures", "kill-child.ts"), out], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on("exit", (code, signal) => resolve(signal ?? code)));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes("writing-step-4")) resolve();
    });
    child.on("exit", () => reject(new Error(`child exited before the kill point: ${stdout} ${stderr}`)));
  });
  child.kill("SIGKILL");
  assert.equal(await exited, "SIGKILL");

  const root = join(out, CHECKPOINT_DIR);
  const leftovers = readdirSync(root).filter((n) => n.startsWith("."));
  assert.equal(leftovers.length, 1, "the interrupted write left its temporary folder");
  assert.ok(existsSync(join(root, leftovers[0]!, "model.safetensors")));
  assert.deepEqual(listCheckpoints(out).map(([s]) => s), [2], "only the complete checkpoint counts");
  const ck = loadCheckpoint(listCheckpoints(out)[0]![1]);
  assert.equal(ck.state.step, 2);
  assert.equal(ck.state.batchIndex, 4, "2 steps × 2 micro-batches consumed");
  for (const t of ck.weights.values()) t.dispose();
  for (const t of ck.optimizer.tensors.values()) t.dispose();

  const events: TrainEvent[] = [];
  const resumed = makeTrainer(out, { onEvent: (e) => events.push(e) });
  const r = await resumed.trainer.run();
  resumed.dispose();
  assert.ok(events.some((e) => e.type === "warning" && e.code === "temporary-removed"));
  assert.equal(readdirSync(root).filter((n) => n.startsWith(".")).length, 0, "the temporary folder was cleaned up");
  assert.deepEqual(r.history.map((h) => h.step), [3, 4, 5, 6]);
  assert.deepEqual(r.history.map((h) => h.metrics.loss), full.slice(2), "steps 3–6 after resuming from step 2");
});
