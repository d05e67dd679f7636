// `diffusion-dpo label`: AI feedback — scores both images of every stored pair with a reward and
// writes the scores to the store; training then reads the winners (src/feedback/label.ts).
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";
import { ProgressBar } from "../progress.js";

export default defineCommand({
  meta: { name: "label", description: "Label the store's pairs with a reward (AI feedback); pairs within the margin become ties that training skips." },
  args: {
    db: { type: "string", description: "Preference store (SQLite file) holding the pairs", default: "runs/pairs.sqlite" },
    reward: { type: "string", description: "Reward: alignment, appeal, category, a folder from `reward train`, NAME=PATH for clip, pickscore, hpsv2, aesthetic (weights on disk), or a weighted mix 0.7*pickscore=PATH+0.3*aesthetic=PATH", default: "alignment" },
    margin: { type: "string", description: "|score_a − score_b| ≤ margin → tie (in the reward's units)", default: "0" },
    batch: { type: "string", description: "Pairs scored per batch", default: "64" },
    relabel: { type: "boolean", description: "Score pairs this reward labelled before too", default: false },
    json: { type: "boolean", description: "Print one JSON object with the summary", default: false },
  },
  async run({ args }) {
    const { existsSync } = await import("node:fs");
    const margin = Number(args.margin);
    if (!(margin >= 0)) throw new UsageError(`--margin must be a number ≥ 0, got "${args.margin}"`);
    const batchSize = Number(args.batch);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new UsageError(`--batch must be a positive integer, got "${args.batch}"`);
    if (!existsSync(args.db)) throw new UsageError(`--db ${args.db}: no such preference store; create pairs with \`diffusion-dpo pairs --db ${args.db}\``);
    const { PreferenceStore } = await import("../../data/store.js");
    const { loadReward } = await import("../../feedback/registry.js");
    const { labelPairs } = await import("../../feedback/label.js");
    const reward = loadReward(args.reward);
    const store = new PreferenceStore(args.db);
    const bar = new ProgressBar(`label (${reward.name})`);
    try {
      const summary = await labelPairs({
        store, reward, margin, batchSize, relabel: args.relabel,
        onEvent: (e) => {
          if (e.type === "batch") bar.update(e.labelled, e.total, "pairs");
        },
      });
      if (summary.labelled > 0) bar.done();
      if (args.json) process.stdout.write(`${JSON.stringify({ db: args.db, ...summary })}\n`);
      else {
        process.stdout.write(`${args.db}: ${summary.labelled} pairs labelled with ${summary.reward} (a ${summary.a}, b ${summary.b}, ties ${summary.ties} within margin ${margin}); ${summary.alreadyLabelled} were labelled already\n`);
      }
    } finally {
      store.close();
      reward.dispose?.();
    }
  },
});
