// One machine's launcher for the multi-machine test: runs launchLocal with torchrun's
// multi-node settings (argv: SPEC_JSON RESULTS_DIR NNODES NODE_RANK MASTER_ADDR MASTER_PORT
// NPROC) over train-worker.ts; exits non-zero, with the failing worker's stderr, when one fails.
import { launchLocal, WorkerFailedError } from "../../src/distributed/index.js";

const [spec, results, nnodes, nodeRank, masterAddr, masterPort, nproc] = process.argv.slice(2);
try {
  await launchLocal({
    nproc: Number(nproc), nnodes: Number(nnodes), nodeRank: Number(nodeRank), masterAddr: masterAddr!, masterPort: Number(masterPort),
    args: ["--import", "tsx", "test/distributed/train-worker.ts", spec!, results!],
    stdio: "pipe", threadsPerWorker: 1, env: { DDPO_TEST_TIMEOUT_MS: process.env.DDPO_TEST_TIMEOUT_MS ?? "30000" },
  });
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n${err instanceof WorkerFailedError ? err.stderr : ""}\n`);
  process.exit(1);
}
