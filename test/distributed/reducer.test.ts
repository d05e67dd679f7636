// The overlapped gradient reducer (src/distributed/reducer.ts, DDP's): two ranks, one bucket per
// parameter. Averages are exact (small integers); the buckets are launched by the gradient
// hooks during backward (overlap, counted, not timed); accumulation all-reduces only the armed
// backward; parameters without a gradient do not hang; dispose removes the hooks.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { freePort } from "../../src/distributed/index.js";

async function twoRanks(scenario: string): Promise<Record<string, unknown>[]> {
  const port = await freePort();
  const runs = [0, 1].map(
    (rank) =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ["--import", "tsx", "test/distributed/worker.ts", scenario], {
          env: { ...process.env, MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port), RANK: String(rank), WORLD_SIZE: "2", LOCAL_RANK: String(rank), DDPO_THREADS: "1", DDPO_TEST_TIMEOUT_MS: "20000" },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        let err = "";
        child.stdout.on("data", (d: Buffer) => (out += d.toString()));
        child.stderr.on("data", (d: Buffer) => (err += d.toString()));
        child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`rank ${rank} exited ${code}: ${err}`))));
      }),
  );
  return (await Promise.all(runs)).map((o) => JSON.parse(o.trim()) as Record<string, unknown>);
}

test("overlapped reducer: exact averages, buckets launched from the gradient hooks, accumulation, unused parameters, dispose", async () => {
  const results = await twoRanks("reducer");
  for (const r of results) {
    // reverse parameter order: p3 (16 bytes), p2 (8), p1 (12)
    assert.deepEqual(r.layout, [{ params: 1, bytes: 16 }, { params: 1, bytes: 8 }, { params: 1, bytes: 12 }]);
    // d/dp1 = w (1 | 2) → 1.5; d/dp2 = 2·rank (0 | 2) → 1; d/dp3 = 2·p3·w (2 | 4) → 3; three steps alike
    for (const s of r.steps as Record<string, unknown>[]) {
      assert.deepEqual(s.stats, { buckets: 3, launchedInBackward: 3, unready: 0, waitMs: 0 }, "every bucket was started by a hook, before backward returned");
      assert.deepEqual(s.g1, [1.5, 1.5, 1.5]);
      assert.deepEqual(s.g2, [1, 1]);
      assert.deepEqual(s.g3, [3, 3, 3, 3]);
    }
    const w = (r.rank as number) + 1;
    assert.deepEqual(r.localAfterFirst, [w, w, w], "the unarmed backward stays local (no_sync)");
    const acc = r.accumulated as Record<string, unknown>;
    assert.deepEqual(acc.stats, { buckets: 3, launchedInBackward: 3, unready: 0, waitMs: 0 });
    assert.deepEqual(acc.g1, [3, 3, 3], "mean over ranks of the two micro-batches' sum: (2 + 4) / 2");
    assert.deepEqual(acc.g3, [6, 6, 6, 6]);
    assert.match(r.twice as string, /parameter 0 received a gradient after its bucket's all-reduce was launched.*gradientReduce: "after-backward"/);
    assert.deepEqual(r.afterDispose, [w, w, w], "no hook left after dispose: the gradient is this rank's own");
    assert.match(r.armAfterDispose as string, /the gradient reducer was disposed/);
    const u = r.unused as Record<string, unknown>;
    assert.equal(u.unready, r.rank === 0 ? 1 : 2);
    assert.equal(u.launchedInBackward, 0, "`never` comes first in launch order, so all buckets wait for finish()");
    assert.deepEqual(u.g1, [2, 2, 2], "(1 + 3) / 2");
    assert.deepEqual(u.gOnly, [2, 2], "(4 + 0) / 2: rank 1 contributes zeros");
    assert.deepEqual(u.gNever, [0, 0]);
    assert.match(r.frozen as string, /parameter 0 does not require grad: pass only the trainable parameters/);
  }
});
