// How often each reward agrees with the labelling reward on a labelled pair store: for every pair
// the store's AI label decided (PreferenceStore.resolve, its stored tie margin honoured), the share
// where another reward prefers the same image. A reward that agrees well above 50% is a feature DPO
// can learn from the labels without learning the labelling reward itself (an "easy" general
// feature); below 50% the labels push it down.
//   DDPO_THREADS=1 node --import tsx scripts/label-agreement.ts runs/demo/pairs.sqlite [labelReward] [reward ...]
import { decodeImage } from "../src/data/images.js";
import { PreferenceStore } from "../src/data/store.js";
import { loadReward } from "../src/feedback/registry.js";

const [path, labelReward = "alignment", ...others] = process.argv.slice(2);
if (!path) {
  console.error("usage: label-agreement.ts PAIRS.sqlite [labelReward] [reward ...]");
  process.exit(2);
}
const rewards = (others.length ? others : ["appeal", "category"]).map(loadReward);
const store = new PreferenceStore(path, { readonly: true });
const ids = store.pairIds();
const decided = ids.flatMap((id) => {
  const res = store.resolve(id, { labels: "ai", reward: labelReward });
  return res.winner === "a" || res.winner === "b" ? [{ pair: store.pair(id)!, chosenIsA: res.winner === "a" }] : [];
});
if (decided.length === 0) {
  console.error(`${path}: no pairs decided by ${labelReward} labels`);
  process.exit(2);
}
const decode = (image: number, row: number, field: string) => decodeImage(store.imageBytes(image), { source: path, row, field });
const a = await Promise.all(decided.map((d) => decode(d.pair.imageA, d.pair.id, "image_a")));
const b = await Promise.all(decided.map((d) => decode(d.pair.imageB, d.pair.id, "image_b")));
const prompts = decided.map((d) => d.pair.prompt);
console.log(`${path}: ${ids.length} pairs, ${decided.length} decided by ${labelReward}`);
for (const reward of rewards) {
  const sa = await reward.score(a, prompts);
  const sb = await reward.score(b, prompts);
  let agree = 0, n = 0;
  decided.forEach((d, i) => {
    if (sa[i] === sb[i]) return;
    n++;
    if ((sa[i]! > sb[i]!) === d.chosenIsA) agree++;
  });
  console.log(`  ${reward.name}: prefers the chosen image in ${(100 * agree / n).toFixed(1)}% of ${n} pairs`);
}
store.close();
