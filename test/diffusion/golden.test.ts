// Schedules, timesteps and full sampler runs against numbers computed by
// scripts/golden/diffusion/make_golden.py (diffusers' formulas in PyTorch, float32).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, randn, tidy } from "../../src/tensor/index.js";
import {
  addNoise,
  classifierFreeGuidance,
  discreteTimesteps,
  dpmTimesteps,
  euler,
  eulerInitNoiseSigma,
  eulerSigmas,
  eulerTimesteps,
  getSampler,
  initialNoise,
  NoiseSchedule,
  sample,
  seededInputs,
  trainingTarget,
  dpmpp2m,
  type TimestepSpacing,
} from "../../src/diffusion/index.js";
import { allClose, close, condModel, dummyModel, fromList, golden, goldenSchedule, matchSummary } from "./helpers.js";

test("alphasCumprod and betas match the golden schedules (float64 exactly, diffusers' float32 to rounding)", () => {
  for (const [key, g] of Object.entries<any>(golden.schedules)) {
    const s = goldenSchedule(key);
    const at: number[] = g.at;
    allClose(at.map((t) => s.alphasCumprod[t]!), g.alphasCumprod64, 1e-12, 1e-15, `${key} ᾱ (f64)`);
    allClose(at.map((t) => s.betas[t]!), g.betas64, 1e-12, 1e-15, `${key} β (f64)`);
    allClose(at.map((t) => s.alphasCumprod[t]!), g.alphasCumprod32, 2e-5, 1e-9, `${key} ᾱ (diffusers f32)`);
    close(s.alphasCumprod.reduce((a, b) => a + b, 0), g.sumAlphasCumprod64, 1e-12, 0, `${key} Σᾱ`);
  }
});

test("zero-terminal-SNR rescale: ᾱ_{T−1} = 0, ᾱ_0 kept, SNR and σ follow", () => {
  const plain = new NoiseSchedule();
  const z = new NoiseSchedule({ rescaleZeroTerminalSnr: true });
  assert.ok(Math.abs(z.alphasCumprod[999]!) < 1e-15);
  close(z.alphasCumprod[0]!, plain.alphasCumprod[0]!, 1e-12, 0, "ᾱ_0 kept");
  assert.equal(z.snr(999), z.alphasCumprod[999]! / (1 - z.alphasCumprod[999]!));
  close(plain.snr(500), plain.alphasCumprod[500]! / (1 - plain.alphasCumprod[500]!), 1e-15, 0, "snr");
  close(plain.sigma(500) ** 2, 1 / plain.snr(500), 1e-12, 0, "σ² = 1/SNR");
});

test("timesteps for every spacing and step count match diffusers' set_timesteps", () => {
  const fams = { discrete: discreteTimesteps, euler: eulerTimesteps, dpm: dpmTimesteps };
  for (const [fam, fn] of Object.entries(fams)) {
    for (const spacing of ["leading", "trailing", "linspace"] as TimestepSpacing[]) {
      for (const [n, expected] of Object.entries<any>(golden.timesteps[fam][spacing])) {
        const ts = fn(spacing, 1000, Number(n), 1);
        const what = `${fam}/${spacing}/${n}`;
        if (Array.isArray(expected)) {
          assert.deepEqual(ts, expected, what);
        } else {
          assert.equal(ts.length, expected.len, `${what} length`);
          assert.deepEqual(ts.slice(0, 20), expected.head, `${what} head`);
          assert.deepEqual(ts.slice(-20), expected.tail, `${what} tail`);
          close(ts.reduce((a, b) => a + b, 0), expected.sum, 1e-12, 1e-6, `${what} sum`);
        }
      }
    }
  }
});

test("Euler and DPM-Solver σ tables and init_noise_sigma match diffusers (also with ᾱ_{T−1} = 2⁻²⁴)", () => {
  for (const [key, g] of Object.entries<any>(golden.kSigmas)) {
    const [sched, spacing, dpm] = key.split("/") as [string, TimestepSpacing, string | undefined];
    const s = goldenSchedule(sched);
    if (dpm === undefined) {
      const ts = euler.timesteps(s, 10, { spacing });
      const sig = eulerSigmas(s, ts);
      // diffusers forms 1 − ᾱ in float32: near t = 0 that cancels to ~4e-5 relative error in σ
      allClose(sig, g.sigmas, 5e-5, 1e-7, `${key} σ`);
      close(eulerInitNoiseSigma(sig, spacing), g.initNoiseSigma, 5e-6, 0, `${key} init σ`);
    } else {
      const proc = dpmpp2m.prepare(s, 10, { spacing });
      // DPM-Solver's σ_i are exposed through its noising: x0 = 0, noise = 1 gives σ_i/√(σ_i²+1)
      const xs = tidy(() => {
        const one = fromList([1], [1, 1]);
        const zero = fromList([0], [1, 1]);
        return proc.timesteps.map((_, i) => proc.addNoise(zero, one, i).item());
      });
      const expected = (g.sigmas as number[]).slice(0, 10).map((sg) => sg / Math.sqrt(sg * sg + 1));
      allClose(xs, expected, 3e-6, 1e-7, `${key} σ_t`);
      proc.dispose();
    }
  }
});

test("the seed scheme reproduces torch.Generator noise per sample", () => {
  const { seeds, shape, initial } = golden.noise;
  matchSummary(initialNoise(seeds, shape), initial, "initial noise", 0, 0);
  // batch-independence: each row alone is the same
  const alone = initialNoise([seeds[1]], shape).toFloat32Array();
  const both = initialNoise(seeds, shape).toFloat32Array();
  assert.deepEqual(alone, both.slice(alone.length));
});

test("10-step runs of every sampler (ε, v + zero SNR + trailing, x0, img2img, η) match diffusers", () => {
  const clean = () => fromList(goldenCleanValues(), [2, 3, 8, 8]);
  for (const r of golden.runs) {
    const what = `${r.sampler}/${r.schedule}${r.strength !== undefined ? `/strength ${r.strength}` : ""}${r.eta !== undefined ? `/eta ${r.eta}` : ""}${r.spacing ? `/${r.spacing}` : ""}`;
    tidy(() => {
      const schedule = goldenSchedule(r.schedule);
      const sampler = getSampler(r.sampler);
      assert.deepEqual(sampler.timesteps(schedule, r.steps, { spacing: r.spacing }), r.timesteps, `${what} timesteps`);
      const proc = sampler.prepare(schedule, r.steps, { spacing: r.spacing, eta: r.eta });
      close(proc.initNoiseSigma, r.initNoiseSigma, 3e-7, 0, `${what} init σ`);
      proc.dispose();
      const { gen, noise } = seededInputs(golden.noise.seeds, golden.noise.shape);
      const out = sample({
        sampler,
        model: dummyModel,
        schedule,
        steps: r.steps,
        noise,
        gen,
        spacing: r.spacing,
        eta: r.eta,
        init: r.strength !== undefined ? { x0: clean(), strength: r.strength } : undefined,
      });
      matchSummary(out, r.out, what, 2e-5, 2e-5);
    });
  }
});

/** The golden script's clean input is torch.randn(seed 2024)·0.5 + 0.1; rebuilt here from our Generator. */
function goldenCleanValues(): number[] {
  return tidy(() => randn([2, 3, 8, 8], new Generator(2024)).mul(0.5).add(0.1).toArray());
}

test("the img2img input rebuilt from the seed matches the golden script's", () => {
  matchSummary(fromList(goldenCleanValues(), [2, 3, 8, 8]), golden.noise.clean, "clean input", 1e-6, 1e-7);
});

test("classifier-free guidance (one batched call, rescale) matches diffusers' formula", () => {
  const g = golden.guidance;
  tidy(() => {
    const cond = fromList(g.inputs.cond, [2, 4, 5]);
    const uncond = fromList(g.inputs.uncond, [1, 4, 5]);
    const x = fromList(g.inputs.x, [2, 3, 8, 8]);
    for (const [scale, rescale] of [[7.5, 0], [7.5, 0.7], [3, 0], [1, 0]] as const) {
      let calls = 0;
      const counted = (xx: typeof x, t: number, c: typeof x) => {
        calls++;
        return condModel(xx, t, c);
      };
      const f = classifierFreeGuidance(counted, cond, uncond, scale, rescale);
      const key = `${scale.toFixed(1)}/${rescale.toFixed(1)}`;
      matchSummary(f(x, g.inputs.t), g[key], `cfg ${key}`, 1e-5, 1e-6);
      assert.equal(calls, 1, "one model call per guided step");
    }
    const guided = classifierFreeGuidance(condModel, cond, uncond, 7.5);
    const { gen, noise } = seededInputs(golden.noise.seeds, golden.noise.shape);
    const out = sample({ sampler: "ddim", model: guided, schedule: new NoiseSchedule(), steps: 10, noise, gen });
    matchSummary(out, g["ddimRun7.5"], "guided ddim run", 2e-5, 2e-5);
  });
});

test("forward noising and the v target at per-sample t match the golden", () => {
  const g = golden.noising;
  tidy(() => {
    const s = new NoiseSchedule();
    const x0 = fromList(goldenCleanValues(), [2, 3, 8, 8]);
    const noise = initialNoise(golden.noise.seeds, golden.noise.shape);
    matchSummary(addNoise(s, x0, noise, g.t), g.xt, "x_t (number[] t)", 1e-6, 1e-6);
    const tI64 = fromList(g.t, [2]).to("i64");
    matchSummary(addNoise(s, x0, noise, tI64), g.xt, "x_t (i64 tensor t)", 1e-6, 1e-6);
    matchSummary(trainingTarget("v_prediction", s, x0, noise, g.t), g.v, "v target", 1e-6, 1e-6);
    matchSummary(trainingTarget("epsilon", s, x0, noise, g.t), golden.noise.initial, "ε target", 0, 0);
  });
});
