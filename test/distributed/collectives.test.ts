import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { launchLocal, WorkerFailedError, freePort, distributedEnvFromProcess } from "../../src/distributed/index.js";
import { ProcessGroup } from "../../src/distributed/index.js";

const workerArgs = (scenario: string) => ["--import", "tsx", "test/distributed/worker.ts", scenario];

test("two ranks: all-reduce (sum, avg, max), broadcast and bucketed gradient averaging", async () => {
  const lines: string[] = [];
  const port = await freePort();
  // Capture output by spawning the workers ourselves through the launcher's env contract.
  const runs = [0, 1].map(
    (rank) =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, workerArgs("collectives"), {
          env: { ...process.env, MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port), RANK: String(rank), WORLD_SIZE: "2", LOCAL_RANK: String(rank), DDPO_THREADS: "1" },
          stdio: ["ignore", "pipe", "inherit"],
        });
        let out = "";
        child.stdout.on("data", (d: Buffer) => (out += d.toString()));
        child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`rank ${rank} exited ${code}`))));
      }),
  );
  for (const out of await Promise.all(runs)) lines.push(out.trim());
  const results = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const r of results) {
    assert.deepEqual(r.sum, [3, 3, 3]);
    assert.deepEqual(r.avg, [2, 2]);
    assert.deepEqual(r.max, [1, 0]);
    assert.deepEqual(r.broadcast, [7, 7]);
    // rank 0: p1 grad 1, p2 grad 0; rank 1: p1 grad 2, p2 grad 2 → means 1.5 and 1
    assert.deepEqual(r.g1, [1.5, 1.5, 1.5]);
    assert.deepEqual(r.g2, [1, 1]);
    assert.deepEqual(r.g3, [0, 0]);
    assert.ok((r.buckets as number) >= 2, "8-byte buckets split the gradients");
    assert.deepEqual(r.numbers, [1, "NaN"], "float64 average of 0.5 and 1.5; NaN propagates");
    assert.deepEqual(r.gathered, [{ rank: 0, text: "é", nested: [0] }, { rank: 1, text: "éééé", nested: [1] }]);
    assert.equal(r.threads, 1, "DDPO_THREADS sets the worker's thread count");
  }
});

test("a rank that dies ends the job with an error naming it, without hanging", async () => {
  const started = Date.now();
  await assert.rejects(
    launchLocal({ nproc: 2, args: workerArgs("die"), stdio: "pipe", env: { DDPO_TEST_TIMEOUT_MS: "5000" } }),
    (err: unknown) => err instanceof WorkerFailedError && err.rank === 1 && err.code === 3 && /rank 1 exited with code 3/.test(err.message),
  );
  assert.ok(Date.now() - started < 30_000);
});

test("a rendezvous nobody joins times out with a clear error", async () => {
  const port = await freePort();
  const env = { masterAddr: "127.0.0.1", masterPort: port, rank: 1, worldSize: 2, localRank: 1 };
  // Rank 1 connects to a store that never starts: it must fail, naming the address and the rank.
  assert.throws(() => ProcessGroup.init(env, "gloo", 1500), /rendezvous at 127\.0\.0\.1:\d+ failed for rank 1/);
});

test("fromEnvironment: DDPO_DIST_TIMEOUT_SEC bounds the rendezvous; backend from DDPO_DIST_BACKEND or the device", async () => {
  const port = await freePort();
  const env = { MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port), RANK: "1", WORLD_SIZE: "2" };
  const started = Date.now();
  assert.throws(() => ProcessGroup.fromEnvironment({ env: { ...env, DDPO_DIST_TIMEOUT_SEC: "1" } }), /rendezvous at 127\.0\.0\.1:\d+ failed for rank 1 within 1000 ms/);
  assert.ok(Date.now() - started < 15_000);
  assert.throws(() => ProcessGroup.fromEnvironment({ env: { ...env, DDPO_DIST_BACKEND: "mpi" } }), /DDPO_DIST_BACKEND must be gloo or nccl, got "mpi"/);
  assert.throws(() => ProcessGroup.fromEnvironment({ env: { ...env, DDPO_DIST_TIMEOUT_SEC: "soon" } }), /DDPO_DIST_TIMEOUT_SEC must be a positive number/);
  assert.equal(ProcessGroup.fromEnvironment({ env: {} }), null, "no WORLD_SIZE: not distributed");
});

test("torchrun-style environment parsing", () => {
  assert.equal(distributedEnvFromProcess({}), null);
  assert.deepEqual(distributedEnvFromProcess({ WORLD_SIZE: "2", RANK: "1", MASTER_ADDR: "h", MASTER_PORT: "29500" }), {
    masterAddr: "h", masterPort: 29500, rank: 1, worldSize: 2, localRank: 1,
  });
  assert.throws(() => distributedEnvFromProcess({ WORLD_SIZE: "2", RANK: "2", MASTER_ADDR: "h", MASTER_PORT: "1" }), /RANK must be an integer in \[0, 2\)/);
  assert.throws(() => distributedEnvFromProcess({ WORLD_SIZE: "2", RANK: "0", MASTER_PORT: "1" }), /MASTER_ADDR is not set/);
  assert.throws(() => distributedEnvFromProcess({ WORLD_SIZE: "x" }), /WORLD_SIZE must be a positive integer/);
});

test("multi-node launch settings: --nnodes > 1 needs the master's address and port; --node-rank in range", async () => {
  await assert.rejects(launchLocal({ nproc: 1, nnodes: 2, nodeRank: 1, args: [] }), /--nnodes > 1 needs --master-addr .* and --master-port/);
  await assert.rejects(launchLocal({ nproc: 1, nnodes: 2, nodeRank: 2, masterAddr: "10.0.0.1", masterPort: 29500, args: [] }), /--node-rank must be an integer in \[0, 2\)/);
  await assert.rejects(launchLocal({ nproc: 1, nnodes: 0, args: [] }), /--nnodes must be a positive integer/);
});
