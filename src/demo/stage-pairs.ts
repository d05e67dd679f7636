// Stage 1: K candidates per training caption from the base model (recorded seeds) into
// <out>/pairs.sqlite, and per held-out caption into <out>/heldout-pairs.sqlite. Re-run, it
// samples only the missing candidates.
import { resolve } from "node:path";
import { PreferenceStore } from "../data/store.js";
import { generatePairs } from "../feedback/pairs.js";
import { loadModelPair } from "../eval/models.js";
import { disposeTextToImageModel, loadModelFolder, type TextToImageModel } from "../models/pipeline.js";
import type { DemoSettings } from "./settings.js";
import type { DemoPaths, Emit, PairsStageSummary } from "./types.js";

export function pairsHeadline(s: PairsStageSummary): string {
  return `${s.trainPairs} training pairs over ${s.trainPrompts} captions, ${s.heldoutPairs} held-out pairs over ${s.heldoutPrompts} captions`;
}

/** The model candidates come from: the base, or (a later round) the base with a run's final weights on. */
function loadPolicy(settings: DemoSettings, policyRun: string | null): { model: TextToImageModel; release: () => void } {
  if (policyRun === null) {
    const model = loadModelFolder(settings.model);
    return { model, release: () => disposeTextToImageModel(model) };
  }
  const pair = loadModelPair(settings.model, policyRun);
  // LoRA: the adapters stay on after use("tuned")
  return { model: pair.use("tuned", (m) => m), release: () => pair.dispose() };
}

/**
 * K candidates per training caption into paths.pairs, and per held-out caption (none in later
 * rounds: pairPrompts empty) into paths.heldoutPairs; from `policyRun`'s weights when given.
 */
export async function pairsStage(
  settings: DemoSettings, paths: Pick<DemoPaths, "pairs" | "heldoutPairs">, trainPrompts: string[], pairPrompts: { prompt: string }[], emit: Emit,
  policyRun: string | null = null, seed = settings.seed,
): Promise<PairsStageSummary> {
    const { model, release } = loadPolicy(settings, policyRun);
    const trainStore = new PreferenceStore(paths.pairs);
    const heldStore = pairPrompts.length > 0 ? new PreferenceStore(paths.heldoutPairs) : null;
    try {
      const total = settings.k * (trainPrompts.length + pairPrompts.length);
      let offset = 0;
      let already = 0;
      const common = {
        model, modelName: resolve(policyRun ?? settings.model), k: settings.k, seed, sampler: settings.sampler,
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
      const b = heldStore === null ? { prompts: 0, pairs: 0, imagesGenerated: 0 } : await run(pairPrompts.map((p) => p.prompt), heldStore, "held-out captions");
      return {
        trainPrompts: a.prompts, heldoutPrompts: b.prompts, trainPairs: a.pairs, heldoutPairs: b.pairs,
        imagesGenerated: a.imagesGenerated + b.imagesGenerated,
      };
    } finally {
      trainStore.close();
      heldStore?.close();
      release();
    }
}
