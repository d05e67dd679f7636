// Where a DPO step's time goes, ours against PyTorch's: self time and calls per ATen op over 4
// steps on the emoji-base architecture (8 pairs of 32×32), LoRA and full, from libtorch's op
// profiler (ours, native profileStart/Stop) and torch.autograd.profiler (bench/torch/dpo.py).
// Also the step's wall time outside ATen ops (JavaScript, the binding, the trainer).
//
//   DDPO_THREADS=1 node --import tsx scripts/perf/profile-breakdown.ts --mode lora [--top 25]
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Generator, getNumThreads, rand } from "../../src/tensor/index.js";
import { native } from "../../src/tensor/native.js";
import { clipTextConfigToJson } from "../../src/models/clip/text-model.js";
import { toDiffusersConfig } from "../../src/models/unet/config.js";
import { disposeTextToImageModel, encodePrompts, loadModelFolder } from "../../src/models/pipeline.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { injectLora } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer, loraAdapters } from "../../src/train/trainer.js";
import { TensorPairSource, type PairBatchSource } from "../../src/train/data.js";
import { TorchTwin } from "../../bench/alternating.js";

const { values } = parseArgs({ options: { mode: { type: "string", default: "lora" }, top: { type: "string", default: "25" } } });
const mode = values.mode as "lora" | "full";
const PAIRS = 8;
const WARMUP = 2;
const PROFILED = 4;
const model = loadModelFolder("models/emoji-base");
const unet = model.unet;
const tmp = mkdtempSync(join(tmpdir(), "profile-breakdown-"));
const trace = join(tmp, "trace.json");

// ---- ours ----
const g = new Generator(0);
const n = 4 * PAIRS;
const pairs = {
  prompts: Array.from({ length: n }, (_, i) => ["grinning face", "red heart", "cat face with tears of joy", "rocket"][i % 4]!),
  chosen: rand([n, 3, 32, 32], g).mul(2).sub(1),
  rejected: rand([n, 3, 32, 32], g).mul(2).sub(1),
};
const inner = new TensorPairSource(pairs, PAIRS, 0);
let profiledFrom = 0;
let wall = 0;
const source: PairBatchSource = {
  batchSize: PAIRS,
  async batch(i) {
    // steps WARMUP … WARMUP+PROFILED−1 run under the profiler
    if (i === WARMUP) { native.profileStart(trace); profiledFrom = performance.now(); }
    if (i === WARMUP + PROFILED) { wall = performance.now() - profiledFrom; native.profileStop(); }
    return inner.batch(i);
  },
};
if (mode === "lora") {
  setInitSeed(0);
  injectLora(unet, { rank: 8, alpha: 8, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
}
const config = loadTrainConfig({
  flags: {
    seed: 0, method: "dpo", beta: 5000, finetune: mode, "lora.rank": 8, "lora.alpha": 8, batchSize: PAIRS, maxSteps: WARMUP + PROFILED + 1,
    learningRate: 1e-5, scaleLr: false, warmupSteps: 0, lrSchedule: "constant", checkpointEvery: 0, keepCheckpoints: 1,
    predictionType: "v_prediction", promptDropout: 0.2, outputDir: join(tmp, "run"),
  },
});
model.textEncoder.requiresGrad(false).eval();
const trainer = new DpoTrainer({
  config, model: unet, adapters: mode === "lora" ? loraAdapters(unet) : undefined,
  encodePrompts: (p) => encodePrompts(model, p), schedule: new NoiseSchedule(model.scheduler), data: source, saveFinal: () => {},
});
await trainer.run();
trainer.dispose();

interface Row { calls: number; selfUs: number }
/** Self time per op name from a Chrome trace of nested "X" events (a parent's time minus its children's). */
function selfTimes(events: { name: string; ph: string; ts: number; dur: number; tid: number | string }[]): Map<string, Row> {
  const out = new Map<string, Row>();
  const byThread = new Map<string, typeof events>();
  for (const e of events) if (e.ph === "X") (byThread.get(String(e.tid)) ?? byThread.set(String(e.tid), []).get(String(e.tid))!).push(e);
  for (const list of byThread.values()) {
    list.sort((a, b) => a.ts - b.ts || b.dur - a.dur);
    const stack: { end: number; row: Row }[] = [];
    for (const e of list) {
      while (stack.length > 0 && stack[stack.length - 1]!.end <= e.ts) stack.pop();
      const row = out.get(e.name) ?? out.set(e.name, { calls: 0, selfUs: 0 }).get(e.name)!;
      row.calls++;
      row.selfUs += e.dur;
      if (stack.length > 0) stack[stack.length - 1]!.row.selfUs -= e.dur;
      stack.push({ end: e.ts + e.dur, row });
    }
  }
  return out;
}
// PROFILE_TRACE=FILE keeps our chrome trace (chrome://tracing, Perfetto) to see where an op is called from
if (process.env.PROFILE_TRACE) copyFileSync(trace, process.env.PROFILE_TRACE);
const raw = JSON.parse(readFileSync(trace, "utf8")) as unknown;
const ours = selfTimes(Array.isArray(raw) ? raw : (raw as { traceEvents: [] }).traceEvents);

// ---- PyTorch ----
const twin = new TorchTwin("dpo.py", getNumThreads(), {
  unet: toDiffusersConfig(unet.config), text: clipTextConfigToJson(model.textEncoder.config), mode, pairs: PAIRS,
  seq_len: model.textEncoder.config.maxPositionEmbeddings, beta: 5000, rank: 8, alpha: 8,
}, 600_000);
await twin.call("step", WARMUP);
const t0 = performance.now();
const theirsRaw = (await twin.call("profile")).value as Record<string, Row>;
const theirsWall = performance.now() - t0;
twin.close();
const theirs = new Map(Object.entries(theirsRaw));

const total = (m: Map<string, Row>) => [...m.values()].reduce((a, r) => a + r.selfUs, 0);
const calls = (m: Map<string, Row>) => [...m.values()].reduce((a, r) => a + r.calls, 0);
const per = (us: number) => (us / 1000 / PROFILED).toFixed(1);
const names = [...new Set([...ours.keys(), ...theirs.keys()])]
  .sort((a, b) => Math.max(ours.get(b)?.selfUs ?? 0, theirs.get(b)?.selfUs ?? 0) - Math.max(ours.get(a)?.selfUs ?? 0, theirs.get(a)?.selfUs ?? 0));
const lines = [
  `DPO step breakdown, ${mode}, emoji-base arch, ${PAIRS} pairs, ${getNumThreads()} thread(s); per step, mean of ${PROFILED} profiled steps`,
  `wall (profiled): ours ${(wall / PROFILED).toFixed(0)} ms, PyTorch ${(theirsWall / PROFILED).toFixed(0)} ms`,
  `ATen self time: ours ${per(total(ours))} ms in ${(calls(ours) / PROFILED).toFixed(0)} op calls, PyTorch ${per(total(theirs))} ms in ${(calls(theirs) / PROFILED).toFixed(0)} op calls`,
  `outside ATen ops: ours ${(wall / PROFILED - total(ours) / 1000 / PROFILED).toFixed(0)} ms, PyTorch ${(theirsWall / PROFILED - total(theirs) / 1000 / PROFILED).toFixed(0)} ms`,
  "",
  `${"op".padEnd(44)} ${"ours ms".padStart(8)} ${"calls".padStart(6)} ${"torch ms".padStart(9)} ${"calls".padStart(6)}`,
];
const shown = names.slice(0, Number(values.top));
if (process.env.PROFILE_CALL_DIFF) for (const k of names) if (!shown.includes(k) && Math.abs((ours.get(k)?.calls ?? 0) - (theirs.get(k)?.calls ?? 0)) > 20) shown.push(k);
for (const k of shown) {
  const o = ours.get(k);
  const t = theirs.get(k);
  lines.push(`${k.slice(0, 44).padEnd(44)} ${(o ? per(o.selfUs) : "—").padStart(8)} ${(o ? (o.calls / PROFILED).toFixed(0) : "—").padStart(6)} ${(t ? per(t.selfUs) : "—").padStart(9)} ${(t ? (t.calls / PROFILED).toFixed(0) : "—").padStart(6)}`);
}
process.stdout.write(`${lines.join("\n")}\n`);
inner.dispose();
disposeTextToImageModel(model);
rmSync(tmp, { recursive: true, force: true });
