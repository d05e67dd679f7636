// A worker process for the distributed tests: joins the group from torchrun-style variables and
// runs the scenario named by argv[2], printing one JSON line of results.
import { full, tensor } from "../../src/tensor/index.js";
import { PEER_FAILURE_EXIT_CODE, PeerFailureError, ProcessGroup, distributedEnvFromProcess } from "../../src/distributed/index.js";
import { getNumThreads } from "../../src/tensor/index.js";

process.on("uncaughtException", (err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(err instanceof PeerFailureError ? PEER_FAILURE_EXIT_CODE : 1);
});

const scenario = process.argv[2];
const env = distributedEnvFromProcess();
if (env === null) throw new Error("worker needs WORLD_SIZE > 1");
const pg = ProcessGroup.fromEnvironment({ timeoutMs: Number(process.env.DDPO_TEST_TIMEOUT_MS ?? 20000) })!;

if (scenario === "collectives") {
  const x = full([3], env.rank + 1);
  pg.allReduce([x], "sum");
  const avg = full([2], env.rank * 4);
  pg.allReduce([avg], "avg");
  const mx = tensor([env.rank, -env.rank]);
  pg.allReduce([mx], "max");
  const b = full([2], env.rank === 0 ? 7 : -1);
  pg.broadcast([b], 0);
  // Gradients differ per rank; the bucketed average must equal the plain mean, whatever the buckets.
  const p1 = tensor([1, 2, 3]).setRequiresGrad();
  const p2 = tensor([4, 5]).setRequiresGrad();
  p1.mul(env.rank + 1).sum().add(p2.mul(env.rank * 2).sum()).backward();
  const noGradParam = tensor([1, 1]).setRequiresGrad();
  const buckets = pg.averageGradients([p1, p2, noGradParam], 8);
  pg.barrier();
  const numbers = pg.allReduceNumbers([env.rank + 0.5, env.rank === 0 ? Number.NaN : 1], "avg");
  const gathered = pg.allGatherJson({ rank: env.rank, text: "é".repeat(env.rank * 3 + 1), nested: [env.rank] });
  process.stdout.write(`${JSON.stringify({
    threads: getNumThreads(), numbers: numbers.map((v) => (Number.isNaN(v) ? "NaN" : v)), gathered,
    rank: env.rank, sum: x.toArray(), avg: avg.toArray(), max: mx.toArray(), broadcast: b.toArray(),
    g1: p1.grad!.toArray(), g2: p2.grad!.toArray(), g3: noGradParam.grad!.toArray(), buckets,
  })}\n`);
} else if (scenario === "reducer") {
  // The overlapped reducer with one bucket per parameter (8-byte buckets). Values are small
  // integers, so every average is exact and the checks are equalities.
  const w = env.rank + 1; // 1 on rank 0, 2 on rank 1
  const p1 = tensor([1, 2, 3]).setRequiresGrad();
  const p2 = tensor([4, 5]).setRequiresGrad();
  const p3 = tensor([1, 1, 1, 1]).setRequiresGrad();
  const loss = () => p1.mul(w).sum().add(p2.mul(2 * env.rank).sum()).add(p3.mul(p3).mul(w).sum());
  const reducer = pg.createReducer([p1, p2, p3], { bucketBytes: 8, firstBucketBytes: 8 });
  const out: Record<string, unknown> = { rank: env.rank, layout: reducer.buckets };
  // repeated steps: three armed backwards, gradients cleared between them
  const steps: unknown[] = [];
  for (let s = 0; s < 3; s++) {
    for (const p of [p1, p2, p3]) p.grad = null;
    reducer.arm();
    loss().backward();
    const stats = reducer.finish();
    steps.push({ stats: { ...stats, waitMs: 0 }, g1: p1.grad!.toArray(), g2: p2.grad!.toArray(), g3: p3.grad!.toArray() });
  }
  out.steps = steps;
  // accumulation: the first micro-batch's backward is not armed (no_sync), the second is
  for (const p of [p1, p2, p3]) p.grad = null;
  loss().backward();
  out.localAfterFirst = p1.grad!.toArray();
  reducer.arm();
  loss().backward();
  out.accumulated = { stats: { ...reducer.finish(), waitMs: 0 }, g1: p1.grad!.toArray(), g3: p3.grad!.toArray() };
  // a second gradient after its bucket was sent is refused (both ranks do the same, so the
  // collectives still match), naming what to do
  reducer.arm();
  loss().backward();
  p1.mul(w).sum().backward();
  try {
    reducer.finish();
    out.twice = "no error";
  } catch (err) {
    out.twice = (err as Error).message;
  }
  reducer.dispose();
  reducer.dispose();
  // after dispose: no hooks are left (a backward runs and stays local), and the reducer refuses use
  for (const p of [p1, p2, p3]) p.grad = null;
  loss().backward();
  out.afterDispose = p1.grad!.toArray();
  try {
    reducer.arm();
  } catch (err) {
    out.armAfterDispose = (err as Error).message;
  }
  // parameters without a gradient: `onlyRank0` is used on rank 0 only, `never` by nobody; the
  // last one in launch order first, so every bucket waits for finish(): no hang, zeros for `never`
  const onlyRank0 = tensor([2, 2]).setRequiresGrad();
  const never = tensor([3, 3]).setRequiresGrad();
  const unused = pg.createReducer([p1, onlyRank0, never], { bucketBytes: 8, firstBucketBytes: 8 });
  p1.grad = null;
  unused.arm();
  (env.rank === 0 ? p1.sum().add(onlyRank0.mul(4).sum()) : p1.mul(3).sum()).backward();
  const st = unused.finish();
  out.unused = { unready: st.unready, launchedInBackward: st.launchedInBackward, g1: p1.grad!.toArray(), gOnly: onlyRank0.grad!.toArray(), gNever: never.grad!.toArray() };
  unused.dispose();
  try {
    pg.createReducer([tensor([1])]);
  } catch (err) {
    out.frozen = (err as Error).message;
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
} else if (scenario === "die") {
  // Rank 1 dies before the collective; rank 0 must not hang.
  if (env.rank === 1) process.exit(3);
  const x = full([3], 1);
  pg.allReduce([x], "sum");
  process.stdout.write("rank 0 finished the collective without its peer\n");
}
pg.destroy();
