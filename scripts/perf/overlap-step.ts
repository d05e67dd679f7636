// The real DPO step (dpoStep) on emoji-base, overlapBackward on vs off, full and LoRA, alternating;
// medians of N steps. DDPO_THREADS=2 node --import tsx scripts/perf/overlap-step.ts [steps] [lora|full] [first part's fraction]
import { Generator } from "../../src/tensor/index.js";
import { dpoStep } from "../../src/train/dpo-step.js";
import { emojiStepSetup } from "./emoji-step-setup.js";

const steps = Number(process.argv[2] ?? 8);
const mode = process.argv[3] ?? "lora";
const { unet, batch, models, opts } = emojiStepSetup(mode);
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
