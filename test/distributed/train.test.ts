// Data-parallel training over loopback: W processes with batch B/W each train like one process
// with batch B (same per-step losses and weights within float tolerance; gradients averaged by
// the overlapped reducer, the trainer's default, or the after-backward fallback), a dead rank ends the
// job naming it, and a 2-process checkpoint resumes in a 2-process run reproducing the
// uninterrupted losses exactly.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchLocal, WorkerFailedError } from "../../src/distributed/index.js";
import { TensorPairSource } from "../../src/train/data.js";
import { DpoTrainer } from "../../src/train/trainer.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { runSpec, type DpoSpec, type RunOutput, type Spec } from "./dp-run.js";
import { TinyDenoiser, brightPairs, encodePrompts } from "../train/tiny.js";

const tmp = (): string => mkdtempSync(join(tmpdir(), "ddp-train-"));

async function launch(spec: Spec, nproc = 2): Promise<RunOutput[]> {
  const results = tmp();
  try {
    await launchLocal({
      nproc, args: ["--import", "tsx", "test/distributed/train-worker.ts", JSON.stringify(spec), results],
      stdio: "pipe", threadsPerWorker: 1, env: { DDPO_TEST_TIMEOUT_MS: "20000" },
    });
  } catch (err) {
    if (err instanceof WorkerFailedError) err.message += `\n${err.stderr}`;
    throw err;
  }
  return Array.from({ length: nproc }, (_, r) => JSON.parse(readFileSync(join(results, `rank${r}.json`), "utf8")) as RunOutput);
}

function maxDiff(a: Record<string, number[]>, b: Record<string, number[]>): number {
  assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort());
  let m = 0;
  for (const [k, va] of Object.entries(a)) {
    const vb = b[k]!;
    assert.equal(va.length, vb.length, k);
    for (let i = 0; i < va.length; i++) m = Math.max(m, Math.abs(va[i]! - vb[i]!));
  }
  return m;
}

function assertLossesClose(got: number[], want: number[], tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: step count`);
  got.forEach((l, i) => assert.ok(Math.abs(l - want[i]!) <= tol, `${what} step ${i + 1}: loss ${l} vs ${want[i]} (tolerance ${tol})`));
}

test("TensorPairSource shards: the ranks' batches concatenated are the one-process batch, step for step", () => {
  const pairs = brightPairs(10, 4, 3);
  const whole = new TensorPairSource(pairs, 4, 9);
  const parts = [0, 1].map((rank) => new TensorPairSource(pairs, 2, 9, { rank, worldSize: 2 }));
  assert.equal(parts[0]!.batchesPerEpoch, whole.batchesPerEpoch);
  for (const index of [0, 1, 2, 5]) {
    const w = whole.batch(index);
    const p = parts.map((s) => s.batch(index));
    assert.deepEqual([...p[0]!.prompts, ...p[1]!.prompts], w.prompts);
    // [chosen…, rejected…] per rank → the whole batch's chosen are rank 0's then rank 1's chosen
    const wc = w.pixels.slice(0, 0, 4).toFloat32Array();
    const pc = [...p[0]!.pixels.slice(0, 0, 2).toFloat32Array(), ...p[1]!.pixels.slice(0, 0, 2).toFloat32Array()];
    assert.deepEqual(Array.from(wc), pc);
  }
  assert.throws(() => new TensorPairSource(pairs, 6, 0, { rank: 0, worldSize: 2 }), /batch size 6 × 2 processes must be at most 10/);
  assert.throws(() => new TensorPairSource(pairs, 2, 0, { rank: 2, worldSize: 2 }), /shard rank 2 of worldSize 2 is invalid/);
});

test("the trainer refuses a sharded source without a process group", () => {
  const cfg = loadTrainConfig({ flags: { batchSize: 2, outputDir: tmp() } });
  const data = new TensorPairSource(brightPairs(8, 4, 1), 2, 0, { rank: 1, worldSize: 2 });
  assert.throws(
    () => new DpoTrainer({ config: cfg, model: new TinyDenoiser(), encodePrompts, schedule: new NoiseSchedule(), data }),
    /reads shard 1 of 2 but no processGroup was given/,
  );
});

test("DPO: 2 processes × batch 2 (accumulation 2) = 1 process × batch 4: losses and weights; rank 0 alone emits and writes; the 2-process checkpoint resumes in a 2-process run", async () => {
  const base: Omit<DpoSpec, "outputDir"> = { kind: "dpo", globalBatch: 4, accumulation: 2, maxSteps: 4, checkpointEvery: 2 };
  const single = await runSpec({ ...base, outputDir: tmp() });
  const dir = tmp();
  const [r0, r1] = await launch({ ...base, outputDir: dir });

  assert.ok(Math.abs(single.losses[0]! - Math.LN2) < 1e-6, "step 1 at init: ln 2");
  // Float tolerance: the two runs sum the same per-pair terms in another order (f32, rounding
  // ~1e-8 on per-sample MSEs); DPO multiplies those by β/2 = 1000 inside logσ, so losses agree to
  // ~1e-5 (measured ≤ 3e-6 before; 1.4e-7 with the overlapped reducer, weights 1.3e-7), the MSE
  // metrics and weights to ~1e-6. The bounds stay wide for other BLAS kernels' orders.
  for (const r of [r0!, r1!]) {
    assertLossesClose(r.losses, single.losses, 2e-5, `rank ${r.rank}`);
    // relative tolerances; gradNorm carries the β/2 factor like the loss, margin is a difference of near-equal MSEs
    const tol: Record<string, number> = { implicitAcc: 1e-9, policyMse: 1e-5, referenceMse: 1e-5, margin: 1e-5, gradNorm: 1e-3 };
    for (const [key, t] of Object.entries(tol)) {
      r.metrics.forEach((m, i) => {
        const want = single.metrics[i]![key]!;
        const scale = key === "margin" ? single.metrics[i]!.policyMse! : Math.abs(want);
        assert.ok(Math.abs(m[key]! - want) <= t * scale + 1e-12, `rank ${r.rank} step ${i + 1} ${key}: ${m[key]} vs ${want}`);
      });
    }
    const d = maxDiff(r.weights, single.weights);
    assert.ok(d < 1e-5, `rank ${r.rank} weights differ from the one-process run by ${d}`);
  }
  // rank 1 started from other random weights: the broadcast and the identical updates make the ranks bit-identical
  assert.equal(maxDiff(r0!.weights, r1!.weights), 0);
  assert.deepEqual(r0!.losses, r1!.losses);
  assert.ok(r0!.events > 0 && r1!.events === 0, `events: rank 0 ${r0!.events}, rank 1 ${r1!.events}`);
  const steps = readdirSync(join(dir, "checkpoints")).sort();
  assert.deepEqual(steps, ["step-000002", "step-000004"]);
  const state = JSON.parse(readFileSync(join(dir, "checkpoints", "step-000002", "trainer_state.json"), "utf8")) as { worldSize: number; batchIndex: number };
  assert.equal(state.worldSize, 2);
  assert.equal(state.batchIndex, 4);
  assert.ok(existsSync(join(dir, "final", "unet", "diffusion_pytorch_model.safetensors")));

  // resume the step-2 checkpoint in a new 2-process run: steps 3 and 4 exactly as uninterrupted
  const resumed = await launch({ ...base, outputDir: tmp(), resume: join(dir, "checkpoints", "step-000002") });
  for (const r of resumed) {
    assert.deepEqual(r.losses, r0!.losses.slice(2), `rank ${r.rank}: resumed losses`);
    assert.equal(maxDiff(r.weights, r0!.weights), 0);
  }
  // a different world size is refused, naming both
  await assert.rejects(runSpec({ ...base, outputDir: tmp(), resume: join(dir, "checkpoints", "step-000002") }), /written by a run with 2 processes and this run has 1; resume with the same number \(--nproc 2\)/);
});

test("LoRA DPO with interleaved shards: adapters broadcast from rank 0; 2 processes × batch 2 = 1 process × batch 4", async () => {
  const base: Omit<DpoSpec, "outputDir"> = { kind: "dpo", globalBatch: 4, accumulation: 1, maxSteps: 3, checkpointEvery: 0, lora: true };
  const single = await runSpec({ ...base, outputDir: tmp() });
  const [r0, r1] = await launch({ ...base, outputDir: tmp(), interleaved: true });
  // measured with the overlapped reducer: losses 6e-8, weights 4e-9
  for (const r of [r0!, r1!]) {
    assertLossesClose(r.losses, single.losses, 2e-5, `rank ${r.rank}`);
    const d = maxDiff(r.weights, single.weights);
    assert.ok(d < 1e-5, `rank ${r.rank} weights differ by ${d}`);
  }
  assert.equal(maxDiff(r0!.weights, r1!.weights), 0);
});

test("overlapped reducer with 256-byte buckets (many), accumulation 2: bit-equal to the after-backward all-reduce, and = 1 process", async () => {
  const base: Omit<DpoSpec, "outputDir"> = { kind: "dpo", globalBatch: 4, accumulation: 2, maxSteps: 3, checkpointEvery: 0, bucketBytes: 256 };
  const single = await runSpec({ ...base, outputDir: tmp() });
  const [o0, o1] = await launch({ ...base, outputDir: tmp() });
  const [a0] = await launch({ ...base, outputDir: tmp(), gradientReduce: "after-backward" });
  // two ranks' sum a + b has no order to differ in: the bucket layout cannot change a bit
  assert.deepEqual(o0!.losses, a0!.losses);
  assert.equal(maxDiff(o0!.weights, a0!.weights), 0);
  assert.equal(maxDiff(o0!.weights, o1!.weights), 0);
  // against one process: measured 1.4e-7 (losses) and 1.3e-7 (weights), bounds as above
  assertLossesClose(o0!.losses, single.losses, 2e-5, "overlapped");
  const d = maxDiff(o0!.weights, single.weights);
  assert.ok(d < 1e-5, `weights differ from the one-process run by ${d}`);
});

test("pretraining: 2 processes × batch 3 = 1 process × batch 6 (losses, weights); only rank 0 writes checkpoints", async () => {
  const single = await runSpec({ kind: "pretrain", outputDir: tmp(), globalBatch: 6, steps: 3 });
  const dir = tmp();
  const [r0, r1] = await launch({ kind: "pretrain", outputDir: dir, globalBatch: 6, steps: 3 });
  for (const r of [r0!, r1!]) {
    assertLossesClose(r.losses, single.losses, 2e-6, `rank ${r.rank}`);
    const d = maxDiff(r.weights, single.weights);
    assert.ok(d < 1e-5, `rank ${r.rank} weights differ by ${d}`);
  }
  assert.equal(maxDiff(r0!.weights, r1!.weights), 0);
  assert.ok(r0!.events > 0 && r1!.events === 0);
  const st = JSON.parse(readFileSync(join(dir, "checkpoints", "step-000003", "state.json"), "utf8")) as { worldSize: number };
  assert.equal(st.worldSize, 2);
});

test("a rank killed mid-training ends the job with an error naming it, without hanging", async () => {
  const started = Date.now();
  await assert.rejects(
    launch({ kind: "dpo", outputDir: tmp(), globalBatch: 4, accumulation: 1, maxSteps: 6, checkpointEvery: 0, killRank: 1, killAtBatch: 2 }),
    (err: unknown) => err instanceof WorkerFailedError && err.rank === 1 && err.signal === "SIGKILL" && /worker rank 1 was killed by SIGKILL/.test(err.message),
  );
  assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`);
});
