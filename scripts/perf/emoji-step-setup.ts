// The DPO step's models on emoji-base for the step probes (overlap-step.ts, pipeline-step.ts):
// full fine-tuning (a frozen copy as reference) or LoRA r 8 (the same network, adapters off),
// and one fixed batch of 8 random pairs.
import { Generator, keep, rand, tidy } from "../../src/tensor/index.js";
import { encodePrompts, loadModelFolder } from "../../src/models/pipeline.js";
import { injectLora, setLoraEnabled } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { adaptersOffReference, denoiserOf, type PairBatch, type StepModels, type StepOptions } from "../../src/train/dpo-step.js";

export function emojiStepSetup(mode: string) {
  const model = loadModelFolder("models/emoji-base");
  model.textEncoder.requiresGrad(false).eval();
  const unet = model.unet;
  let reference;
  if (mode === "lora") {
    unet.requiresGrad(false);
    setInitSeed(0);
    injectLora(unet, { rank: 8, alpha: 8, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
    reference = adaptersOffReference(denoiserOf(unet), (on) => setLoraEnabled(unet, on));
  } else {
    reference = denoiserOf(unet.deepCopy().requiresGrad(false));
  }
  const g = new Generator(0);
  const pixels = keep(tidy(() => rand([16, 3, 32, 32], g).mul(2).sub(1)));
  const batch: PairBatch = { prompts: ["grinning face", "red heart", "cat face", "rocket", "grinning face", "red heart", "cat face", "rocket"], pixels };
  const models: StepModels = { policy: denoiserOf(unet), reference, encodePrompts: (p: string[]) => encodePrompts(model, p) };
  const opts: StepOptions = { method: "dpo", schedule: new NoiseSchedule(model.scheduler), predictionType: "v_prediction", promptDropout: 0.2, lossScale: 1, beta: 5000 };
  return { unet, batch, models, opts };
}
