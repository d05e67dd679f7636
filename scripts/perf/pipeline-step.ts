// The real DPO step (dpoStep) on emoji-base, overlapped, with and without the pipeline (each step
// preparing the next during its last backward), full or LoRA, in alternating chains of steps;
// medians of the steady-state step times.
//   DDPO_THREADS=2 node --import tsx scripts/perf/pipeline-step.ts [rounds] [lora|full] [first] [prefetched]
// first: the first part's share of the pairs (default balancedPipelineSplit's); prefetched: the share
// of the next step's reference run ahead (default likewise). The unpipelined chain uses
// balancedOverlapSplit, as the trainer does without the pipeline.
import { Generator } from "../../src/tensor/index.js";
import {
  balancedOverlapSplit, balancedPipelineSplit, disposePreparedStep, dpoStep, prepareStep, type PairBatch, type PreparedStep, type StepOptions,
} from "../../src/train/dpo-step.js";
import { emojiStepSetup } from "./emoji-step-setup.js";

const rounds = Number(process.argv[2] ?? 6);
const mode = (process.argv[3] ?? "lora") as "lora" | "full";
const defaults = balancedPipelineSplit(mode);
const first = Number(process.argv[4] ?? defaults.first);
const prefetched = Number(process.argv[5] ?? defaults.prefetched);
const { unet, batch, models, opts: stepOpts } = emojiStepSetup(mode);
const base: StepOptions = { ...stepOpts, overlapBackward: true };
const gen = new Generator(1);
const chain = 4;

/** `chain` unpipelined overlapped steps; their times. */
function plain(): number[] {
  const opts = { ...base, overlapSplit: balancedOverlapSplit(mode, true) };
  const out: number[] = [];
  for (let i = 0; i < chain; i++) {
    const t0 = performance.now();
    const r = dpoStep(models, batch, gen, opts);
    unet.zeroGrad();
    if (r.overlapped !== true) throw new Error("not overlapped");
    out.push(performance.now() - t0);
  }
  return out;
}
/** `chain` pipelined steps after one that fills the pipeline (untimed); their times. */
function piped(): number[] {
  const opts: StepOptions = { ...base, overlapSplit: first };
  const m = Math.round(batch.prompts.length * prefetched);
  let input: PairBatch | PreparedStep = prepareStep(models, batch, gen, opts, m);
  const out: number[] = [];
  for (let i = 0; i < chain; i++) {
    const t0 = performance.now();
    const r = dpoStep(models, input, gen, { ...opts, prepareNext: () => prepareStep(models, batch, gen, opts, m) });
    unet.zeroGrad();
    out.push(performance.now() - t0);
    input = r.next!;
  }
  disposePreparedStep(input as PreparedStep);
  return out;
}
const med = (v: number[]) => [...v].sort((p, q) => p - q)[Math.floor(v.length / 2)]!;
plain();
piped();
const a: number[] = [], b: number[] = [], ratios: number[] = [];
for (let i = 0; i < rounds; i++) {
  const x = plain(), y = piped();
  a.push(...x);
  b.push(...y);
  ratios.push(med(x) / med(y));
}
console.log(
  `${mode}: overlapped ${med(a).toFixed(0)} ms [${Math.min(...a).toFixed(0)}, ${Math.max(...a).toFixed(0)}], ` +
    `pipelined (first ${first}, prefetched ${prefetched}) ${med(b).toFixed(0)} ms [${Math.min(...b).toFixed(0)}, ${Math.max(...b).toFixed(0)}]: ` +
    `${(med(a) / med(b)).toFixed(3)}× (per round ${ratios.map((r) => r.toFixed(2)).join(" ")})`,
);
