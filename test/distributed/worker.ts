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
} else if (scenario === "die") {
  // Rank 1 dies before the collective; rank 0 must not hang.
  if (env.rank === 1) process.exit(3);
  const x = full([3], 1);
  pg.allReduce([x], "sum");
  process.stdout.write("rank 0 finished the collective without its peer\n");
}
pg.destroy();
