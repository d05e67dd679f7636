// Measures the process RSS after sampling N images one seed each (one native generator per image),
// for the generator-leak fix: node --import tsx scripts/measure-generator-rss.ts [N]
import { loadModelFolder } from "../src/models/pipeline.js";
import { generate } from "../src/sample/generate.js";
import { setNumThreads } from "../src/tensor/index.js";

setNumThreads(1);
const n = Number(process.argv[2] ?? 2000);
const model = loadModelFolder("models/emoji-base");
const mib = () => Math.round(process.memoryUsage().rss / 2 ** 20);
const start = mib();
const batch = 50;
const marks: number[] = [];
for (let i = 0; i < n; i += batch) {
  if (i % 2000 === 0) marks.push(mib());
  const seeds = Array.from({ length: batch }, (_, k) => 1_000_000 + i + k);
  generate({ model, prompts: seeds.map(() => "grinning face"), seeds, steps: 1, guidance: 1, batchSize: batch, sampler: "ddim" });
}
const { liveGenerators } = await import("../src/tensor/index.js");
const live = typeof liveGenerators === "function" ? liveGenerators() : "n/a (before the fix)";
console.log(JSON.stringify({ images: n, rssStartMiB: start, rssEveryTwoThousandMiB: marks, rssEndMiB: mib(), liveGenerators: live }));
