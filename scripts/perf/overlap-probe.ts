// Probe: does backpropagating one half-batch on a second thread while JavaScript runs the other
// half's forwards beat the serial step at the same core count? LoRA DPO-shaped work on emoji-base
// (policy forward with autograd + reference forward with adapters off, 8 pairs = 16 images), timed
// serially at 1 and 2 threads and overlapped (halves of 8 images), alternating, median of N reps.
//   DDPO_THREADS=2 node --import tsx scripts/perf/overlap-probe.ts [reps]
import { native } from "../../src/tensor/native.js";
import { Generator, noGrad, rand, randn, setNumThreads, tensor, tidy, type Tensor } from "../../src/tensor/index.js";
import { loadModelFolder, encodePrompts } from "../../src/models/pipeline.js";
import { injectLora, setLoraEnabled } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";

const reps = Number(process.argv[2] ?? 8);
const model = loadModelFolder("models/emoji-base");
setInitSeed(0);
injectLora(model.unet, { rank: 8, alpha: 8, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
const g = new Generator(0);
const N = 16;
const x = rand([N, 3, 32, 32], g);
const t = tensor(new BigInt64Array(Array.from({ length: N }, (_, i) => BigInt(50 * i))), [N]);
const cond = noGrad(() => encodePrompts(model, Array.from({ length: N }, (_, i) => ["grinning face", "red heart", "rocket", "cat"][i % 4]!)));
const target = randn([N, 3, 32, 32], g);

function forwards(lo: number, hi: number): Tensor {
  const xs = x.slice(0, lo, hi), ts = t.slice(0, lo, hi), cs = cond.slice(0, lo, hi), tg = target.slice(0, lo, hi);
  const pred = model.unet.forward(xs, ts, cs);
  setLoraEnabled(model.unet, false);
  const ref = noGrad(() => model.unet.forward(xs, ts, cs));
  setLoraEnabled(model.unet, true);
  const e = pred.sub(tg).square().mean();
  const r = ref.sub(tg).square().mean();
  return e.sub(r);
}

function serial(threads: number): number {
  setNumThreads(threads);
  const t0 = performance.now();
  tidy(() => forwards(0, N).backward());
  return performance.now() - t0;
}

function overlapped(threads = 2): number {
  setNumThreads(threads);
  const t0 = performance.now();
  tidy(() => {
    const a = forwards(0, N / 2);
    native.setThreadTeam(1, 1);
    native.backwardStart(a.handle, -1, 1);
    let b: Tensor;
    try {
      b = forwards(N / 2, N);
    } finally {
      native.backwardJoin();
      native.setThreadTeam(threads, threads);
    }
    b.backward();
  });
  return performance.now() - t0;
}

const med = (v: number[]) => [...v].sort((p, q) => p - q)[Math.floor(v.length / 2)]!;
const rows: Record<string, number[]> = { serial1: [], serial2: [], overlap2: [], overlap1: [] };
for (let i = 0; i < 2; i++) { serial(1); serial(2); overlapped(); overlapped(1); }
for (let i = 0; i < reps; i++) {
  rows.serial1!.push(serial(1));
  rows.serial2!.push(serial(2));
  rows.overlap2!.push(overlapped());
  rows.overlap1!.push(overlapped(1));
}
for (const [k, v] of Object.entries(rows)) console.log(`${k}: median ${med(v).toFixed(0)} ms  [${Math.min(...v).toFixed(0)}, ${Math.max(...v).toFixed(0)}]`);
console.log(`overlap with 1+1 threads vs serial at 1 thread ${(med(rows.serial1!) / med(rows.overlap1!)).toFixed(2)}×`);
console.log(`serial 2-thread speedup ${(med(rows.serial1!) / med(rows.serial2!)).toFixed(2)}×; overlap vs serial at 2 threads ${(med(rows.serial2!) / med(rows.overlap2!)).toFixed(2)}×`);
