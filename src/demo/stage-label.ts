// Stage 2: both pair stores labelled by the labelling reward (AI feedback). Re-run, it scores
// only the unlabelled pairs.
import { PreferenceStore } from "../data/store.js";
import { labelPairs } from "../feedback/label.js";
import type { RewardModel } from "../feedback/reward.js";
import type { DemoSettings } from "./settings.js";
import type { DemoPaths, Emit, LabelStageSummary } from "./types.js";

export function labelHeadline(s: LabelStageSummary): string {
  return `${s.reward}: training pairs ${s.train.a + s.train.b} decided, ${s.train.ties} ties; held-out ${s.heldout.a + s.heldout.b} decided, ${s.heldout.ties} ties`;
}

/** Labels paths.pairs and (unless null: a later round has none) paths.heldoutPairs. */
export async function labelStage(
  settings: DemoSettings, paths: { pairs: string; heldoutPairs: string | null }, loadReward: (spec: string) => RewardModel, emit: Emit,
): Promise<LabelStageSummary> {
    const reward = loadReward(settings.labelReward);
    try {
      const label = async (db: string, what: string) => {
        const store = new PreferenceStore(db);
        try {
          return await labelPairs({
            store, reward, margin: 0,
            onEvent: (e) => {
              if (e.type === "batch") emit({ type: "progress", stage: "label", label: `label ${what}`, done: e.labelled, total: e.total });
            },
          });
        } finally {
          store.close();
        }
      };
      const train = await label(paths.pairs, "training pairs");
      const heldout = paths.heldoutPairs === null
        ? { reward: reward.name, margin: 0, labelled: 0, alreadyLabelled: 0, a: 0, b: 0, ties: 0, meanGap: Number.NaN, seconds: 0 }
        : await label(paths.heldoutPairs, "held-out pairs");
      return { reward: reward.name, train, heldout };
    } finally {
      reward.dispose?.();
    }
}
