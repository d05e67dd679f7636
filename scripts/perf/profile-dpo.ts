// Times our DPO step alone (no PyTorch twin) on the emoji-base architecture, LoRA or full, so a
// V8 CPU profile (`node --cpu-prof`) or the native op profiler can break the step down.
//
//   DDPO_THREADS=1 node --import tsx scripts/perf/profile-dpo.ts --mode lora --steps 12
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Generator, rand } from "../../src/tensor/index.js";
import { disposeTextToImageModel, encodePrompts, loadModelFolder } from "../../src/models/pipeline.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { injectLora } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer, loraAdapters } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import { AlternatingSource } from "../../bench/alternating.js";

const { values } = parseArgs({ options: { mode: { type: "string", default: "lora" }, steps: { type: "string", default: "12" }, model: { type: "string", default: "models/emoji-base" } } });
const mode = values.mode as "lora" | "full";
const steps = Number(values.steps);
const PAIRS = 8;
const model = loadModelFolder(values.model!);
const unet = model.unet;
const g = new Generator(0);
const n = 4 * PAIRS;
const pairs = {
  prompts: Array.from({ length: n }, (_, i) => ["grinning face", "red heart", "cat face with tears of joy", "rocket"][i % 4]!),
  chosen: rand([n, 3, 32, 32], g).mul(2).sub(1),
  rejected: rand([n, 3, 32, 32], g).mul(2).sub(1),
};
const inner = new TensorPairSource(pairs, PAIRS, 0);
const source = new AlternatingSource(inner, null);
if (mode === "lora") {
  setInitSeed(0);
  injectLora(unet, { rank: 8, alpha: 8, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
}
const out = mkdtempSync(join(tmpdir(), "profile-dpo-"));
const config = loadTrainConfig({
  flags: {
    seed: 0, method: "dpo", beta: 5000, finetune: mode, "lora.rank": 8, "lora.alpha": 8, batchSize: PAIRS, maxSteps: steps,
    learningRate: 1e-5, scaleLr: false, warmupSteps: 0, lrSchedule: "constant", checkpointEvery: 0, keepCheckpoints: 1,
    predictionType: "v_prediction", promptDropout: 0.2, outputDir: out,
  },
});
model.textEncoder.requiresGrad(false).eval();
const trainer = new DpoTrainer({
  config, model: unet, adapters: mode === "lora" ? loraAdapters(unet) : undefined,
  encodePrompts: (p) => encodePrompts(model, p), schedule: new NoiseSchedule(model.scheduler), data: source,
  saveFinal: () => {},
  onEvent: (e) => { if (e.type === "step") source.stepDone(); },
});
await trainer.run();
process.stdout.write(`steps: ${source.ours.map((x) => (1000 * x).toFixed(0)).join(" ")}\n`);
const t = source.ours.slice(2).sort((a, b) => a - b);
process.stdout.write(`${mode}: median ${(1000 * t[Math.floor(t.length / 2)]!).toFixed(1)} ms/step, range ${(1000 * t[0]!).toFixed(1)}–${(1000 * t[t.length - 1]!).toFixed(1)} over ${t.length} steps\n`);
trainer.dispose();
inner.dispose();
disposeTextToImageModel(model);
rmSync(out, { recursive: true, force: true });
