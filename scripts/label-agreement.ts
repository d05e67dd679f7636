// How often each reward agrees with the labelling reward on a labelled pair store: for every pair
// the store's AI label chose, the share where another reward prefers the same image. A reward that
// agrees well above 50% is a feature DPO can learn from the labels without learning the labelling
// reward itself (an "easy" general feature); below 50% the labels push it down.
//   DDPO_THREADS=1 node --import tsx scripts/label-agreement.ts runs/demo/pairs.sqlite [labelReward] [reward ...]
import Database from "better-sqlite3";
import { decodeImage } from "../src/data/images.js";
import { loadReward } from "../src/feedback/registry.js";

const [store, labelReward = "alignment", ...others] = process.argv.slice(2);
if (!store) {
  console.error("usage: label-agreement.ts PAIRS.sqlite [labelReward] [reward ...]");
  process.exit(2);
}
const rewards = (others.length ? others : ["appeal", "category"]).map(loadReward);
const db = new Database(store, { readonly: true });
const rows = db.prepare(
  `SELECT p.id, pr.text AS prompt, ia.data AS a, ib.data AS b, l.score_a, l.score_b
   FROM pairs p JOIN prompts pr ON pr.id = p.prompt_id JOIN images ia ON ia.id = p.image_a
   JOIN images ib ON ib.id = p.image_b JOIN ai_labels l ON l.pair_id = p.id AND l.reward = ?`,
).all(labelReward) as { id: number; prompt: string; a: Buffer; b: Buffer; score_a: number; score_b: number }[];
if (rows.length === 0) {
  console.error(`${store}: no pairs labelled by ${labelReward}`);
  process.exit(2);
}
const decode = (buf: Buffer, id: number, field: string) => decodeImage(new Uint8Array(buf), { source: store, row: id, field });
const a = await Promise.all(rows.map((r) => decode(r.a, r.id, "image_a")));
const b = await Promise.all(rows.map((r) => decode(r.b, r.id, "image_b")));
const prompts = rows.map((r) => r.prompt);
const chosenIsA = rows.map((r) => r.score_a > r.score_b);
const decided = rows.filter((r) => r.score_a !== r.score_b).length;
console.log(`${store}: ${rows.length} pairs labelled by ${labelReward} (${decided} decided)`);
for (const reward of rewards) {
  const sa = await reward.score(a, prompts);
  const sb = await reward.score(b, prompts);
  let agree = 0, n = 0;
  rows.forEach((r, i) => {
    if (r.score_a === r.score_b || sa[i] === sb[i]) return;
    n++;
    if ((sa[i]! > sb[i]!) === chosenIsA[i]) agree++;
  });
  console.log(`  ${reward.name}: prefers the chosen image in ${(100 * agree / n).toFixed(1)}% of ${n} pairs`);
}
