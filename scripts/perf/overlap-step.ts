// The real DPO step (dpoStep) on emoji-base, overlapBackward on vs off, full and LoRA, alternating;
// medians of N steps. DDPO_THREADS=2 node --import tsx scripts/perf/overlap-step.ts [steps] [lora|full] [first part's fraction]
import { Generator, keep, rand, tidy } from "../../src/tensor/index.js";
import { encodePrompts, loadModelFolder } from "../../src/models/pipeline.js";
import { injectLora, setLoraEnabled } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { adaptersOffReference, denoiserOf, dpoStep, type StepOptions } from "../../src/train/dpo-step.js";

const steps = Number(process.argv[2] ?? 8);
const mode = process.argv[3] ?? "lora";
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
  const copy = unet.deepCopy().requiresGrad(false);
  reference = denoiserOf(copy);
}
const g = new Generator(0);
const pixels = keep(tidy(() => rand([16, 3, 32, 32], g).mul(2).sub(1)));
const batch = { prompts: ["grinning face", "red heart", "cat face", "rocket", "grinning face", "red heart", "cat face", "rocket"], pixels };
const models = { policy: denoiserOf(unet), reference, encodePrompts: (p: string[]) => encodePrompts(model, p) };
const opts: StepOptions = { method: "dpo", schedule: new NoiseSchedule(model.scheduler), predictionType: "v_prediction", promptDropout: 0.2, lossScale: 1, beta: 5000 };
const split = Number(process.argv[4] ?? 0.5);
const time = (overlap: boolean) => {
  const t0 = performance.now();
  const r = dpoStep(models, batch, new Generator(1), { ...opts, overlapBackward: overlap, overlapSplit: split });
  unet.zeroGrad();
  if (overlap && r.overlapped !== true) throw new Error("not overlapped");
  return performance.now() - t0;
};
const med = (v: number[]) => [...v].sort((p, q) => p - q)[Math.floor(v.length / 2)]!;
const on: number[] = [], off: number[] = [];
for (let i = 0; i < 2; i++) { time(true); time(false); }
for (let i = 0; i < steps; i++) { off.push(time(false)); on.push(time(true)); }
console.log(`${mode}, first part ${split}: one pass ${med(off).toFixed(0)} ms [${Math.min(...off).toFixed(0)}, ${Math.max(...off).toFixed(0)}], overlapped ${med(on).toFixed(0)} ms [${Math.min(...on).toFixed(0)}, ${Math.max(...on).toFixed(0)}]: ${(med(off) / med(on)).toFixed(2)}×`);
