import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listCheckpoints, loadCheckpoint, CHECKPOINT_DIR } from "../../src/train/checkpoint.js";
import type { TrainEvent } from "../../src/train/events.js";
import { MAX_STEPS, makeTrainer } from "./fixtures/resume-setup.js";
import { encodePrompts } from "./tiny.js";
import { getNumThreads, setNumThreads } from "../../src/tensor/index.js";

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

/** Runs kill-at.ts until `marker` appears on its stdout (then waits `delayMs` more, if given), then SIGKILLs it. */
async function killChildAt(out: string, step: number, point: string, opts: { marker?: string; delayMs?: number }): Promise<string> {
  const child = spawn(process.execPath, ["--import", "tsx", join("test", "train", "fixtures", "kill-at.ts"), out, String(step), point], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on("exit", (code, signal) => resolve(signal ?? code)));
  await new Promise<void>((resolve, reject) => {
    let armed = false;
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      if (!armed && opts.marker !== undefined && stdout.includes(opts.marker)) {
        armed = true;
        if (opts.delayMs === undefined) resolve();
        else setTimeout(resolve, opts.delayMs);
      }
    });
    child.on("exit", () => (opts.delayMs !== undefined ? resolve() : reject(new Error(`child exited before ${opts.marker}: ${stdout} ${stderr}`))));
  });
  child.kill("SIGKILL");
  await exited;
  return stdout;
}

test("SIGKILL at every point of a checkpoint write and of pruning: resume loads the last complete checkpoint and reproduces the losses", async () => {
  const full = await uninterrupted();
  // every hook of the step-4 write (keep 1: step 2 is pruned after it), the first checkpoint's
  // write (nothing to fall back on: the run starts over), and kills at arbitrary times
  const cases: { step: number; point: string; delayMs?: number }[] = [
    ...["model.safetensors", "optimizer.safetensors", "config.json", "trainer_state.json", "renamed", "prune-renamed", "pruned"].map((point) => ({ step: 4, point })),
    { step: 2, point: "optimizer.safetensors" },
    // arbitrary moments: 0–120 ms after step 1 (the run's 6 steps and 3 checkpoints take ~150 ms)
    ...[0, 15, 30, 50, 80, 120].map((delayMs) => ({ step: 0, point: "none", delayMs })),
  ];
  const seen: string[] = [];
  for (const c of cases) {
    const out = tmp();
    const stdout = await killChildAt(out, c.step, c.point, c.delayMs !== undefined ? { marker: "step-1\n", delayMs: c.delayMs } : { marker: `at-${c.point}` });
    const complete = listCheckpoints(out).map(([s]) => s);
    const last = complete.length === 0 ? 0 : complete[complete.length - 1]!;
    // every folder that looks like a checkpoint is whole
    for (const [, path] of listCheckpoints(out)) {
      const ck = loadCheckpoint(path);
      for (const t of ck.weights.values()) t.dispose();
      for (const t of ck.optimizer.tensors.values()) t.dispose();
    }
    const resumed = makeTrainer(out, {}, { keepCheckpoints: 1 });
    const r = await resumed.trainer.run();
    resumed.dispose();
    const label = c.delayMs !== undefined ? `killed ${c.delayMs} ms after step 1 (last said: ${stdout.trim().split("\n").pop()})` : `killed at step ${c.step} ${c.point}`;
    seen.push(`${label} → resumed from step ${last}`);
    if (c.point === "renamed" || c.point === "prune-renamed" || c.point === "pruned") assert.equal(last, 4, `${label}: the step-4 checkpoint was complete`);
    else if (c.delayMs === undefined) assert.equal(last, c.step - 2, `${label}: the previous checkpoint is the last complete one`);
    assert.deepEqual(r.history.map((h) => h.step), Array.from({ length: MAX_STEPS - last }, (_, i) => last + i + 1), label);
    assert.deepEqual(r.history.map((h) => h.metrics.loss), full.slice(last), `${label}: losses after resume`);
    assert.equal(readdirSync(join(out, CHECKPOINT_DIR)).filter((n) => n.startsWith(".")).length, 0, `${label}: temporary folders cleaned`);
  }
  process.stderr.write(`# SIGKILL matrix: ${seen.join("; ")}\n`);
});

test("pipelined steps (2 threads): each step prepares the next, and resuming from a checkpoint taken with a step prepared ahead reproduces the losses", async () => {
  const threads = getNumThreads();
  // the pipeline needs the overlapped step, which needs ≥ 2 threads
  setNumThreads(2);
  try {
    // prompt encodings done by the time the first step ends: its 2 micro-batches, plus the next
    // step's first when that was prepared during the first step's last backward
    const run = async (out: string, extra: Parameters<typeof makeTrainer>[1] = {}, flags: Record<string, unknown> = {}) => {
      let calls = 0;
      let atFirstStep = -1;
      // batches of 2 pairs: below PIPELINE_MIN_PAIRS, so the pipeline is asked for
      const t = makeTrainer(out, {
        pipelineSteps: true,
        ...extra,
        encodePrompts: (p) => { calls++; return encodePrompts(p); },
        onEvent: (e) => { if (e.type === "step" && atFirstStep < 0) atFirstStep = calls; },
      }, flags);
      const r = await t.trainer.run();
      t.dispose();
      return { losses: r.history.map((h) => h.metrics.loss), atFirstStep };
    };
    const full = await run(tmp());
    assert.equal(full.atFirstStep, 3, "the first step prepared the second step's first micro-batch");
    assert.equal((await run(tmp(), { pipelineSteps: false })).atFirstStep, 2, "unpipelined: only its own micro-batches");
    const out = tmp();
    const first = await run(out, { stopAfterSteps: 3 });
    assert.deepEqual(first.losses, full.losses.slice(0, 3));
    // step 2's checkpoint was written while step 3's first micro-batch was already prepared
    const resumed = await run(out, {}, { resume: join(out, CHECKPOINT_DIR, "step-000002") });
    assert.deepEqual(resumed.losses, full.losses.slice(2), "steps 3–6 resumed from step 2");
  } finally {
    setNumThreads(threads);
  }
});
