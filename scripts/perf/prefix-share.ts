// Measured for issue 20: would sharing the LoRA step's unadapted prefix between policy and reference pay?
//   DDPO_THREADS=1 node --import tsx scripts/perf/prefix-share.ts
// Fraction of the emoji UNet forward spent before the first adapted block (time embedding, conv_in, down block 0).
import { loadModelFolder } from "../../src/models/pipeline.js";
import { Generator, randn, noGrad, tidy, full } from "../../src/tensor/index.js";
const m = loadModelFolder("models/emoji-base");
const u = m.unet;
const g = new Generator(0);
const x = randn([16, 3, 32, 32], g);
const c = randn([16, 32, 64], g);
const t = full([16], 500);
const reps = 30;
const time = (fn: () => void) => { for (let i = 0; i < 3; i++) fn(); const s = performance.now(); for (let i = 0; i < reps; i++) fn(); return (performance.now() - s) / reps; };
const whole = () => noGrad(() => tidy(() => { u.forward(x, t, c); }));
const prefix = () => noGrad(() => tidy(() => {
  const inputs = u.prepareInputs(x, t, c);
  const emb = u.embedding(inputs, x.dtype);
  const h = u.conv_in.forward(x);
  u.down_blocks.at(0).forward(h, emb, inputs.hidden);
}));
const rows: [number, number][] = [];
for (let r = 0; r < 5; r++) rows.push([time(whole), time(prefix)]);
for (const [w, p] of rows) console.log(`forward ${w.toFixed(1)} ms, prefix ${p.toFixed(1)} ms, ${(100 * p / w).toFixed(1)}%`);
