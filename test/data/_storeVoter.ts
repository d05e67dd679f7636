// Worker for the store concurrency test: opens the store itself and votes as fast as it can.
import { workerData, parentPort } from "node:worker_threads";
import { PreferenceStore } from "../../src/data/store.js";

const { path, rater, pairIds, rounds } = workerData as { path: string; rater: string; pairIds: number[]; rounds: number };
const store = new PreferenceStore(path, { busyTimeoutMs: 20000 });
let created = 0;
for (let r = 0; r < rounds; r++) {
  for (const id of pairIds) {
    // every round re-votes the same pairs: the second round must not add rows
    if (store.vote(id, rater, (id + r) % 2 === 0 ? "a" : "b").created) created++;
  }
  // also write AI labels concurrently with the votes
  store.setAiLabel(pairIds[r % pairIds.length]!, `reward-${rater}`, r, -r);
}
store.close();
parentPort!.postMessage({ created });
