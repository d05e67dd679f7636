// How much the labelling reward prefers the base model at a higher guidance over guidance 3 on the
// demo's held-out evaluation captions: the ceiling a "follow the caption more" preference can reach.
//   DDPO_THREADS=1 node --import tsx scripts/guidance-ceiling.ts [model] [g ...]
import { loadModelFolder } from "../src/models/pipeline.js";
import { generate } from "../src/sample/generate.js";
import { loadReward } from "../src/feedback/registry.js";
import { demoPromptSets, splitHeldout } from "../src/demo/prompts.js";

const model = loadModelFolder(process.argv[2] ?? "models/emoji-base");
const gs = process.argv.slice(3).map(Number);
const { heldout } = demoPromptSets(0);
const { evalPrompts } = splitHeldout(heldout, 32, 12);
const prompts = evalPrompts.flatMap((p) => [p.prompt, p.prompt]);
const seeds = evalPrompts.flatMap((_, i) => [1000 + 2 * i, 1001 + 2 * i]);
const rewards = ["alignment", "category", "appeal"].map(loadReward);
const sample = (g: number) => generate({ model, prompts, seeds, sampler: "euler_ancestral", steps: 10, guidance: g });
const base = sample(3);
const baseScores = await Promise.all(rewards.map((r) => r.score(base, prompts)));
for (const g of gs.length ? gs : [1, 5, 7]) {
  const imgs = sample(g);
  const line = [];
  for (let r = 0; r < rewards.length; r++) {
    const s = await rewards[r]!.score(imgs, prompts);
    const wins = s.filter((v, i) => v > baseScores[r]![i]!).length;
    line.push(`${rewards[r]!.name} ${(100 * wins / s.length).toFixed(1)}%`);
  }
  console.log(`guidance ${g} vs 3: ${line.join(", ")}`);
}
