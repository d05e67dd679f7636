// Stage 1: K candidates per training caption from the base model (recorded seeds) into
// <out>/pairs.sqlite, and per held-out caption into <out>/heldout-pairs.sqlite. Re-run, it
// samples only the missing candidates.
import { resolve } from "node:path";
import { PreferenceStore } from "../data/store.js";
import { generatePairs } from "../feedback/pairs.js";
import { disposeTextToImageModel, loadModelFolder } from "../models/pipeline.js";
import type { DemoSettings } from "./settings.js";
import type { DemoPaths, Emit, PairsStageSummary } from "./types.js";

export function pairsHeadline(s: PairsStageSummary): string {
  return `${s.trainPairs} training pairs over ${s.trainPrompts} captions, ${s.heldoutPairs} held-out pairs over ${s.heldoutPrompts} captions`;
}

export async function pairsStage(
  settings: DemoSettings, paths: DemoPaths, trainPrompts: string[], pairPrompts: { prompt: string }[], emit: Emit,
): Promise<PairsStageSummary> {
    const model = loadModelFolder(settings.model);
    const trainStore = new PreferenceStore(paths.pairs);
    const heldStore = new PreferenceStore(paths.heldoutPairs);
    try {
      const total = settings.k * (trainPrompts.length + pairPrompts.length);
      let offset = 0;
      let already = 0;
      const common = {
        model, modelName: resolve(settings.model), k: settings.k, seed: settings.seed, sampler: settings.sampler,
        steps: settings.sampleSteps, guidance: settings.guidance, pairing: settings.pairing, batchSize: 16,
      };
      const run = (prompts: string[], store: PreferenceStore, what: string) => generatePairs({
        ...common, prompts, store,
        onEvent: (e) => {
          if (e.type === "plan") {
            already = prompts.length * settings.k - e.imagesToGenerate;
            emit({ type: "progress", stage: "pairs", label: "candidates", done: offset + already, total, detail: what });
          } else if (e.type === "images") {
            emit({ type: "progress", stage: "pairs", label: "candidates", done: offset + already + e.generated, total, detail: what });
          }
        },
      });
      const a = await run(trainPrompts, trainStore, "training captions");
      offset += trainPrompts.length * settings.k;
      const b = await run(pairPrompts.map((p) => p.prompt), heldStore, "held-out captions");
      return {
        trainPrompts: a.prompts, heldoutPrompts: b.prompts, trainPairs: a.pairs, heldoutPairs: b.pairs,
        imagesGenerated: a.imagesGenerated + b.imagesGenerated,
      };
    } finally {
      trainStore.close();
      heldStore.close();
      disposeTextToImageModel(model);
    }
}
