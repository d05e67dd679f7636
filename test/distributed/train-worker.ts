// A data-parallel training worker for the tests: joins the group from torchrun-style variables
// (set by launchLocal), runs the scenario in argv[2] (JSON, see dp-run.ts) and writes its result
// to <argv[3]>/rank<r>.json. A failure caused by a peer exits with PEER_FAILURE_EXIT_CODE.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ProcessGroup, workerExitCode } from "../../src/distributed/index.js";
import { runSpec, type Spec } from "./dp-run.js";

try {
  const pg = ProcessGroup.fromEnvironment({ timeoutMs: Number(process.env.DDPO_TEST_TIMEOUT_MS ?? 20000) });
  if (pg === null) throw new Error("train-worker needs WORLD_SIZE > 1");
  const out = await runSpec(JSON.parse(process.argv[2]!) as Spec, pg);
  writeFileSync(join(process.argv[3]!, `rank${pg.rank}.json`), JSON.stringify(out));
  pg.destroy();
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(workerExitCode(err));
}
