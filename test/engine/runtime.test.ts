// The binding's runtime: generator lifetime, reduction dims, dtype codes, autocast nesting, the
// thread-count policy and the one-thread-per-process rule. Each case failed before its fix.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import * as T from "../../src/tensor/index.js";
import { native } from "../../src/tensor/native.js";
import { cgroupCpuLimit, chooseThreadCount } from "../../src/tensor/threads.js";

function withoutThreadVars(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.DDPO_THREADS;
  delete env.OMP_NUM_THREADS;
  return env;
}

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

test("generators are freed by dispose() and when collected; their slots are reused", () => {
  const before = T.liveGenerators();
  for (let i = 0; i < 2000; i++) {
    const g = new T.Generator(i);
    T.randn([4], g).dispose();
    g.dispose();
  }
  assert.equal(T.liveGenerators(), before, "2000 disposed generators leave none behind");
  const g = new T.Generator(1);
  g.dispose();
  g.dispose();
  assert.throws(() => T.randn([2], g), /Generator was disposed/);
  // never disposed: freed by the FinalizationRegistry once garbage-collected (child with --expose-gc)
  const script = `
    import { Generator, liveGenerators, randn } from ${JSON.stringify(join(root, "src/tensor/index.ts"))};
    const start = liveGenerators();
    for (let i = 0; i < 2000; i++) randn([4], new Generator(i)).dispose();
    for (let k = 0; k < 20 && liveGenerators() > start + 100; k++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
    console.log(JSON.stringify({ start, end: liveGenerators() }));`;
  const r = spawnSync(process.execPath, ["--expose-gc", "--import", "tsx", "--input-type=module", "-e", script], { cwd: root, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const { start, end } = JSON.parse(r.stdout.trim().split("\n").pop()!) as { start: number; end: number };
  assert.ok(end - start < 100, `generators left after 2000 collected: ${end - start}`);
});

test("prod / any / all take negative dims, as sum does", () => {
  T.tidy(() => {
    // x[i, j, k] = 1 + i + 2j + 3k on a [2, 3, 2] grid; closed-form products
    const vals: number[] = [];
    for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 2; k++) vals.push(1 + i + 2 * j + 3 * k);
    const x = T.tensor(vals, [2, 3, 2]);
    const expect = (dims: number[]): number[] => {
      const keep = [0, 1, 2].filter((d) => !dims.includes(d));
      const out = new Map<string, number>();
      vals.forEach((v, n) => {
        const idx = [Math.floor(n / 6), Math.floor(n / 2) % 3, n % 2];
        const key = keep.map((d) => idx[d]).join(",");
        out.set(key, (out.get(key) ?? 1) * v);
      });
      return [...out.values()];
    };
    assert.deepEqual(x.prod([0, -1]).toArray(), expect([0, 2]));
    assert.deepEqual(x.prod([2, -3]).toArray(), expect([0, 2]));
    assert.deepEqual(x.prod([-1]).toArray(), expect([2]));
    assert.deepEqual(x.prod([-2, 0]).toArray(), expect([0, 1]));
    const b = T.tensor([1, 0, 1, 1, 1, 1], [2, 3]);
    assert.deepEqual(b.all([-1]).toArray(), [0, 1]);
    assert.deepEqual(b.all([0, -1]).toArray(), [0]);
    assert.deepEqual(b.sub(1).any([-1, 0]).toArray(), [1]);
    assert.throws(() => x.prod([0, -3]), /dim -3 appears twice/);
    assert.throws(() => x.prod([3]), /dim 3 is out of range for a 3-d tensor/);
  });
});

test("an unknown dtype code from JavaScript is an error, not a cast", () => {
  assert.throws(() => native.full([2], 1, 99, "cpu"), /unknown dtype code 99/);
  assert.throws(() => native.full([2], 1, 8, "cpu"), /unknown dtype code 8/, "complex types are not ours");
  const h = native.full([2], 1, T.SCALAR_TYPE.f64, "cpu");
  assert.equal(T.wrap(h).dtype, "f64");
});

test("autocast restores the dtype that was in force before it", () => {
  // CUDA's autocast dtype is a thread-local setting even without a GPU; its default is f16
  assert.equal(T.autocastState("cuda").dtype, "f16");
  T.autocast("cuda", "bf16", () => {
    assert.equal(T.autocastState("cuda").dtype, "bf16");
  });
  assert.equal(T.autocastState("cuda").dtype, "f16", "the outer dtype is back");
  T.autocast("cpu", "bf16", () => T.autocast("cpu", "bf16", () => assert.equal(T.autocastState("cpu").dtype, "bf16")));
  assert.equal(T.autocastState("cpu").dtype, "bf16");
});

test("thread count: DDPO_THREADS, then OMP_NUM_THREADS, then affinity capped by the cgroup quota", () => {
  assert.deepEqual(chooseThreadCount({ env: { DDPO_THREADS: "3", OMP_NUM_THREADS: "5" }, cpus: 8, cgroupCpus: 2 }), { threads: 3, source: "DDPO_THREADS" });
  assert.deepEqual(chooseThreadCount({ env: { OMP_NUM_THREADS: "5" }, cpus: 8, cgroupCpus: 2 }), { threads: 5, source: "OMP_NUM_THREADS" });
  assert.deepEqual(chooseThreadCount({ env: { OMP_NUM_THREADS: "4,2" }, cpus: 8, cgroupCpus: null }).threads, 4);
  assert.deepEqual(chooseThreadCount({ env: {}, cpus: 64, cgroupCpus: 2 }), { threads: 2, source: "cgroup quota" });
  assert.deepEqual(chooseThreadCount({ env: {}, cpus: 64, cgroupCpus: 1.5 }).threads, 2, "a fractional quota rounds up");
  assert.deepEqual(chooseThreadCount({ env: {}, cpus: 4, cgroupCpus: 16 }), { threads: 4, source: "cpu affinity" });
  assert.deepEqual(chooseThreadCount({ env: { DDPO_THREADS: "" }, cpus: 2, cgroupCpus: null }), { threads: 2, source: "cpu affinity" });
  assert.throws(() => chooseThreadCount({ env: { DDPO_THREADS: "two" }, cpus: 2, cgroupCpus: null }), /DDPO_THREADS must be a positive integer, got "two"/);
  assert.throws(() => chooseThreadCount({ env: { OMP_NUM_THREADS: "0" }, cpus: 2, cgroupCpus: null }), /OMP_NUM_THREADS must be a positive integer/);
  assert.equal(cgroupCpuLimit("max 100000\n"), null);
  assert.equal(cgroupCpuLimit("150000 100000\n"), 1.5);
  assert.equal(cgroupCpuLimit(null, "-1\n", "100000\n"), null);
  assert.equal(cgroupCpuLimit(null, "200000\n", "100000\n"), 2);
  // applied when the binding loads, in any program that imports the library (not only the CLI)
  for (const [env, want] of [[{ OMP_NUM_THREADS: "1" }, 1], [{ OMP_NUM_THREADS: "1", DDPO_THREADS: "2" }, 2]] as const) {
    const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e",
      `import { getNumThreads } from ${JSON.stringify(join(root, "src/tensor/index.ts"))}; console.log(getNumThreads());`],
    { cwd: root, encoding: "utf8", env: { ...withoutThreadVars(), ...env } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(Number(r.stdout.trim()), want, JSON.stringify(env));
  }
});

test("OpenBLAS's own worker pool follows the thread count (its idle workers spin on a core otherwise)", () => {
  const before = T.getNumThreads();
  try {
    const blas = T.getBlasThreads();
    if (blas === null) {
      // not OpenBLAS: then libopenblas must not be in the process at all
      assert.doesNotMatch(readFileSync("/proc/self/maps", "utf8"), /libopenblas/);
      return;
    }
    assert.equal(blas, before, "at load");
    for (const n of [1, 2, 1]) {
      T.setNumThreads(n);
      const g = new T.Generator(n);
      T.tidy(() => T.randn([64, 64], g).matmul(T.randn([64, 64], g)).sum().item());
      g.dispose();
      assert.equal(T.getBlasThreads(), n);
    }
  } finally {
    T.setNumThreads(before);
  }
});

test("OpenMP waits passively unless the user chose a policy (spinning workers took 2 cores' time: 0.68× at 2 threads)", () => {
  const here = dirname(fileURLToPath(import.meta.url));
  const probe = "import('./src/tensor/native.ts').then(() => process.stdout.write(process.env.OMP_WAIT_POLICY ?? 'unset'))";
  const run = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, ["--import", "tsx", "-e", probe], { cwd: resolve(here, "../.."), env, encoding: "utf8" });
  const base = withoutThreadVars();
  delete base.OMP_WAIT_POLICY;
  delete base.GOMP_SPINCOUNT;
  const set = run(base);
  assert.equal(set.status, 0, set.stderr);
  assert.equal(set.stdout, "PASSIVE");
  assert.equal(run({ ...base, OMP_WAIT_POLICY: "ACTIVE" }).stdout, "ACTIVE", "the user's policy is kept");
  assert.equal(run({ ...base, GOMP_SPINCOUNT: "1000" }).stdout, "unset", "a spin count set by the user is left to libgomp");
});

test("attention on transposed head views equals the composed formula, every call (a β = 0 baddbmm leaked NaNs)", () => {
  const g = new T.Generator(1);
  for (const [lq, lk, h, d] of [[4, 4, 16, 2], [64, 4, 8, 2], [16, 16, 4, 8]] as const) {
    T.tidy(() => {
      const q = T.randn([2, lq, h, d], g).transpose(1, 2);
      const k = T.randn([2, lk, h, d], g).transpose(1, 2);
      const v = T.randn([2, lk, h, d], g).transpose(1, 2);
      const mask = T.randn([lq, lk], g);
      for (const m of [null, mask]) {
        let s = q.matmul(k.transpose(-2, -1)).mul(0.7);
        if (m !== null) s = s.add(m);
        const composed = s.softmax(-1).matmul(v);
        for (let i = 0; i < 50; i++) {
          const err = T.attention(q, k, v, m, 0.7).sub(composed).abs().amax().item();
          // same float32 products in another order: within 1e-6 of values of order 1
          assert.ok(err < 1e-6, `[${lq}, ${lk}, ${h}, ${d}]${m ? " masked" : ""} call ${i}: ${err}`);
        }
      }
    });
  }
});

test("attention does not read its scores buffer: a freed NaN-filled block of that size does not reach the output", () => {
  const g = new T.Generator(3);
  // [n, lq, lk, d] on both sides of the naive kernel's lq·lk·d < 400; every scores buffer is under
  // malloc's mmap threshold, so the freed block is what the next allocation of its size gets back
  for (const [n, lq, lk, d] of [[8, 4, 6, 12], [6, 1, 7, 12], [8, 16, 64, 8], [4, 64, 16, 16], [16, 8, 8, 32]] as const) {
    const q = T.randn([n, lq, d], g), k = T.randn([n, lk, d], g), v = T.randn([n, lk, 3], g);
    const composed = q.matmul(k.transpose(1, 2)).mul(0.5).softmax(-1).matmul(v);
    for (let i = 0; i < 20; i++) {
      T.full([n, lq, lk], Number.NaN).dispose();
      const out = T.attention(q, k, v, null, 0.5);
      const err = out.sub(composed).abs().amax().item();
      out.dispose();
      assert.ok(err < 1e-5, `[${n}, ${lq}, ${lk}, ${d}] call ${i}: ${err}`);
    }
    for (const t of [q, k, v, composed]) t.dispose();
  }
});

test("attention's values and gradients equal the composed formula over 300 small shapes (the scale rides in baddbmm)", () => {
  const g = new T.Generator(2);
  // [n, lq, lk, d] from a fixed walk through 1…20, plus the shapes where an out-of-place β = 0
  // baddbmm returned NaN (libtorch 1.13 leaves its result uninitialised and multiplies it by β)
  const shapes: number[][] = [[8, 4, 6, 12], [8, 9, 5, 3], [6, 1, 7, 12]];
  for (let i = 0; i < 297; i++) shapes.push([1 + (i * 7) % 13, 1 + (i * 3) % 19, 1 + (i * 5) % 17, 1 + (i * 11) % 20]);
  for (const [n, lq, lk, d] of shapes as [number, number, number, number][]) {
    T.tidy(() => {
      const leaf = (shape: number[]) => T.randn(shape, g).setRequiresGrad(true);
      const q = leaf([n, lq, d]), k = leaf([n, lk, d]), v = leaf([n, lk, 5]);
      const w = T.randn([n, lq, 5], g);
      const out = T.attention(q, k, v, null, 0.37);
      out.mul(w).sum().backward();
      const grads = [q.grad!.clone(), k.grad!.clone(), v.grad!.clone()];
      for (const p of [q, k, v]) p.grad = null;
      const composed = q.matmul(k.transpose(1, 2)).mul(0.37).softmax(-1).matmul(v);
      composed.mul(w).sum().backward();
      const errs = [out.sub(composed), ...grads.map((gr, j) => gr.sub([q, k, v][j]!.grad!))].map((e) => e.abs().amax().item());
      const err = Math.max(...errs);
      // NaN fails the comparison; float32 sums of ≤ 20 terms of order 1 in another order: ≤ 1e-5
      assert.ok(err < 1e-5, `[${n}, ${lq}, ${lk}, ${d}]: ${errs.join(", ")}`);
    });
  }
});

test("a worker thread that loads the binding while the main thread uses it gets a clear error", async () => {
  const code = `
    const { parentPort } = require("node:worker_threads");
    try { require(${JSON.stringify(join(root, "build/Release/diffusion_dpo.node"))}); parentPort.postMessage("loaded"); }
    catch (e) { parentPort.postMessage(String(e.message)); }`;
  const worker = new Worker(code, { eval: true });
  const message = await new Promise<string>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  await worker.terminate();
  assert.match(message, /already in use by another JavaScript thread/);
  // the main thread is unaffected
  assert.equal(T.tidy(() => T.tensor([1, 2]).sum().item()), 3);
});
