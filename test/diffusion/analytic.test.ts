// Closed-form checks: with Gaussian data x0 ~ N(μ, s²) the optimal denoiser is known exactly,
//   E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ·μ)/(ᾱ·s² + 1 − ᾱ),
// so every sampler must return samples with mean μ and standard deviation s.
import { test } from "node:test";
import assert from "node:assert/strict";
import { assertNear } from "../_close.js";
import { Generator, liveTensors, randn, tensor, tidy, type Tensor } from "../../src/tensor/index.js";
import {
  ddimInvert,
  img2img,
  getSampler,
  initialNoise,
  interpTable,
  NoiseSchedule,
  sample,
  SAMPLER_NAMES,
  seededGenerators,
  seededInputs,
  x0EpsToPred,
  classifierFreeGuidance,
  type DenoiseModel,
  type PredictionType,
  type SamplerName,
} from "../../src/diffusion/index.js";

const MU = 0.5;
const S = 0.8;
const N = 20000;

/** N(0, 1) noise standardised to exactly zero mean and unit std, so sample noise does not blur the check. */
function standardNoise(n: number, gen: Generator): Tensor {
  return tidy(() => {
    const z = randn([n, 1, 1, 1], gen);
    return z.sub(z.mean()).div(z.std());
  });
}

/**
 * The exact denoiser for N(μ, s²) data, answering in the schedule's prediction type. Fractional
 * timesteps (Euler with linspace spacing) use the σ the sampler interpolates: ᾱ = 1/(σ² + 1).
 */
function gaussianModel(schedule: NoiseSchedule, mu = MU, s = S): DenoiseModel {
  const sigmas = schedule.sigmas();
  const type: PredictionType = schedule.predictionType;
  return (x, t) =>
    tidy(() => {
      const sigma = Number.isInteger(t) ? sigmas[t]! : interpTable(sigmas, t);
      const abar = 1 / (sigma * sigma + 1);
      const a = Math.sqrt(abar);
      const b = Math.sqrt(1 - abar);
      const eps = x.sub(a * mu).mul(b / (abar * s * s + 1 - abar));
      const x0 = x.sub(eps.mul(b)).div(a);
      return x0EpsToPred(type, x0, eps, a, b);
    });
}

function stats(x: Tensor): { mean: number; std: number } {
  return { mean: x.mean().item(), std: x.std().item() };
}

/**
 * What the exact probability-flow ODE gives for Gaussian data when it starts from x = c·z, z
 * standard, at a level ᾱ where the true marginal is N(√ᾱ·μ, ᾱs² + 1 − ᾱ): the flow keeps the
 * standardised coordinate (x − √ᾱμ)/√(ᾱs² + 1 − ᾱ), so x0 = μ + s·that. (A schedule without zero
 * terminal SNR starts slightly off the marginal — Lin et al.'s point — hence not exactly μ, s.)
 */
function flowExpectation(schedule: NoiseSchedule, name: SamplerName, steps: number): { mean: number; std: number } {
  const proc = getSampler(name).prepare(schedule, steps);
  const t0 = proc.timesteps[0]!;
  const sigma = Number.isInteger(t0) ? schedule.sigma(t0) : interpTable(schedule.sigmas(), t0);
  const abar = 1 / (sigma * sigma + 1);
  // the start in VP units: Euler's x = initNoiseSigma·z in σ-space is √ᾱ·initNoiseSigma·z
  const c = name === "euler" ? proc.initNoiseSigma * Math.sqrt(abar) : proc.initNoiseSigma;
  proc.dispose();
  const d = Math.sqrt(abar * S * S + 1 - abar);
  return { mean: MU - (S * Math.sqrt(abar) * MU) / d, std: (S * c) / d };
}

// Deterministic samplers: their 50-step answer is within discretisation error of the exact flow,
// and the error shrinks with more steps.
const DETERMINISTIC: [SamplerName, PredictionType][] = [
  ["ddim", "epsilon"],
  ["euler", "epsilon"],
  ["dpmpp_2m", "epsilon"],
  ["ddim", "v_prediction"],
  ["euler", "v_prediction"],
  ["dpmpp_2m", "sample"],
];
for (const [name, type] of DETERMINISTIC) {
  test(`${name} (${type}) on Gaussian data with its exact denoiser follows the exact flow to μ and s`, () => {
    tidy(() => {
      const schedule = new NoiseSchedule({ predictionType: type });
      const noise = standardNoise(N, new Generator(1234));
      const errs = [50, 250].map((steps) => {
        const out = sample({ sampler: name, model: gaussianModel(schedule), schedule, steps, noise });
        const got = stats(out);
        const want = flowExpectation(schedule, name, steps);
        // (leading spacing starts at t = 981, a little short of pure noise: the mean lands ≈ 0.03 low)
        assert.ok(Math.abs(want.mean - MU) < 0.05 && Math.abs(want.std / S - 1) < 0.01, "the flow's target is the data");
        assert.ok(Math.abs(got.mean - want.mean) < 0.005, `${name} ${steps} steps: mean ${got.mean}, want ${want.mean}`);
        return Math.abs(got.std / want.std - 1);
      });
      assert.ok(errs[0]! < 0.04, `${name}: 50-step std off by ${(errs[0]! * 100).toFixed(2)}%`);
      assert.ok(errs[1]! < 0.01, `${name}: 250-step std off by ${(errs[1]! * 100).toFixed(2)}%`);
      assert.ok(errs[1]! < errs[0]!, `${name}: more steps must get closer (${errs[0]} → ${errs[1]})`);
    });
  });
}

// Ancestral samplers forget their start, so they reach the data's μ and s themselves; they
// under-disperse with few steps (DDPM's fixed-small variance and Euler ancestral replace x0 by its
// posterior mean, ≈ 7% low at 50 steps here, as in diffusers), so they run 1000 steps.
const ANCESTRAL: [SamplerName, PredictionType][] = [
  ["ddpm", "epsilon"],
  ["euler_ancestral", "epsilon"],
  ["ddpm", "v_prediction"],
  ["euler_ancestral", "v_prediction"],
];
for (const [name, type] of ANCESTRAL) {
  test(`${name} (${type}, 1000 steps) on Gaussian data with its exact denoiser gives mean μ and std s`, () => {
    tidy(() => {
      const schedule = new NoiseSchedule({ predictionType: type });
      const gen = new Generator(1234);
      const noise = standardNoise(N, gen);
      const out = sample({ sampler: name, model: gaussianModel(schedule), schedule, steps: 1000, spacing: "trailing", noise, gen });
      const { mean, std } = stats(out);
      // the per-step noise adds ≈ s/√N ≈ 0.0057 of sampling error; seed 1234 lands 0.0117 low for
      // all four (a 2σ draw, the same on every kernel), so the bound is 4σ ≈ 0.025 (2× that)
      assert.ok(Math.abs(mean - MU) < 0.025, `${name}: mean ${mean}, want ${MU}`);
      assert.ok(Math.abs(std / S - 1) < 0.025, `${name}: std ${std}, want ${S}`);
    });
  });
}

test("DDIM at η = 0 is deterministic and needs no generator; DDIM inversion round-trips", () => {
  tidy(() => {
    const schedule = new NoiseSchedule();
    const noise = initialNoise([1, 2, 3], [2, 4, 4]);
    const model = gaussianModel(schedule);
    const a = sample({ sampler: "ddim", model, schedule, steps: 20, noise });
    const b = sample({ sampler: "ddim", model, schedule, steps: 20, noise });
    assert.deepEqual(a.toFloat32Array(), b.toFloat32Array());

    // A model that ignores x makes each step exactly affine: inversion then sampling is the identity.
    const field = randn([3, 2, 4, 4], new Generator(5));
    const blind: DenoiseModel = (x, t) => field.mul(Math.cos(t / 700)).add(x.mul(0));
    const x0 = randn([3, 2, 4, 4], new Generator(6)).mul(S).add(MU);
    const z = ddimInvert({ model: blind, schedule, steps: 20, x0 });
    const back = sample({ sampler: "ddim", model: blind, schedule, steps: 20, noise: z });
    const err = back.sub(x0).abs().amax().item();
    assert.ok(err < 1e-4, `blind-model round trip error ${err}`);

    // With the Gaussian denoiser (a true probability-flow ODE) the round trip is close, and closer
    // with more steps (inversion reuses ε̂ at the current latent: a first-order approximation).
    const roundTrip = (steps: number): number => {
      const z2 = ddimInvert({ model, schedule, steps, x0 });
      const back2 = sample({ sampler: "ddim", model, schedule, steps, noise: z2 });
      return back2.sub(x0).abs().mean().item();
    };
    const [e50, e200] = [roundTrip(50), roundTrip(200)];
    assert.ok(e50 < 0.03 && e200 < e50 / 2, `Gaussian round trip mean |error|: ${e50} at 50 steps, ${e200} at 200`);
    const z2 = ddimInvert({ model, schedule, steps: 50, x0 });
    // and the inverted latent is standard normal-ish: x0's z-score scaled to unit variance
    const zs = stats(z2);
    assert.ok(Math.abs(zs.mean) < 0.5 && Math.abs(zs.std - 1) < 0.5, `inverted latent stats ${JSON.stringify(zs)}`);
  });
});

test("SDEdit: strength 0 returns the input unchanged; strength s runs ⌊n·s⌋ model calls from t_start", () => {
  tidy(() => {
    const schedule = new NoiseSchedule();
    const x0 = randn([2, 3, 4, 4], new Generator(9));
    for (const name of SAMPLER_NAMES) {
      const { gen, noise } = seededInputs([1, 2], [3, 4, 4]);
      let calls = 0;
      const model: DenoiseModel = (x, t) => {
        calls++;
        return gaussianModel(schedule)(x, t);
      };
      const same = img2img({ sampler: name, model, schedule, steps: 50, noise, gen, x0, strength: 0 });
      assert.deepEqual(same.toFloat32Array(), x0.toFloat32Array(), `${name} strength 0`);
      assert.equal(calls, 0);
      const ts: number[] = [];
      img2img({
        sampler: name, model, schedule, steps: 50, noise, gen, x0, strength: 0.6,
        onStep: (e) => ts.push(e.t),
      });
      assert.equal(calls, 30, `${name}: 50 steps at strength 0.6 run the last 30`);
      assert.equal(ts.length, 30);
    }
  });
});

test("SDEdit at strength 0.6 of Gaussian data keeps the data distribution", () => {
  tidy(() => {
    const schedule = new NoiseSchedule();
    const gen = new Generator(77);
    const x0 = standardNoise(N, gen).mul(S).add(MU);
    const noise = standardNoise(N, gen);
    const out = img2img({ sampler: "ddim", model: gaussianModel(schedule), schedule, steps: 200, noise, x0, strength: 0.6 });
    const { mean, std } = stats(out);
    // from the true marginal at t_start, the flow lands on the data (≈ 0.8% DDIM discretisation error here)
    assert.ok(Math.abs(mean - MU) < 0.005 && Math.abs(std / S - 1) < 0.015, `mean ${mean} std ${std}`);
    // and it is an edit, not a copy: correlated with the input but not equal to it
    const diff = out.sub(x0).abs().mean().item();
    assert.ok(diff > 0.01, `output differs from the input (mean |Δ| ${diff})`);
  });
});

test("a seed's sample does not depend on batch size or on the other prompts (ancestral + CFG)", () => {
  tidy(() => {
    const schedule = new NoiseSchedule();
    const condModel = (x: Tensor, t: number, c: Tensor) =>
      tidy(() => gaussianModel(schedule)(x, t).add(c.mean([1, 2]).reshape([c.shape[0]!, 1, 1, 1]).mul(0.1)));
    const embed = (vals: number[]) => tensor(new Float32Array(vals.flatMap((v) => new Array<number>(6).fill(v))), [vals.length, 2, 3]);
    const run = (seeds: number[], prompts: number[], name: SamplerName) => {
      const { gen, noise } = seededInputs(seeds, [2, 4, 4]);
      const model = classifierFreeGuidance(condModel, embed(prompts), embed([0]), 7.5);
      return sample({ sampler: name, model, schedule, steps: 8, noise, gen });
    };
    for (const name of ["ddpm", "euler_ancestral", "dpmpp_2m"] as SamplerName[]) {
      const batch = run([11, 42, 99], [0.3, -1, 2], name);
      const alone = run([42], [-1], name);
      // batch 1 vs batch 3 may reduce along different kernels: float32 rounding only (1e-6 scaled)
      assertNear(alone, batch.slice(0, 1, 2), 1e-6, `${name}: seed 42 alone vs in a batch`);
    }
  });
});

test("memory stays flat over a 100-step run (tidy per step, DPM history freed)", () => {
  const schedule = new NoiseSchedule();
  const model = gaussianModel(schedule);
  for (const name of ["dpmpp_2m", "ddpm"] as SamplerName[]) {
    const gen = seededGenerators([3, 4]);
    const noise = initialNoise(gen, [2, 4, 4]);
    const before = liveTensors();
    let during = -1;
    const out = sample({
      sampler: name, model, schedule, steps: 100, noise, gen,
      onStep: (e) => {
        if (e.done === 10) during = liveTensors();
        if (e.done === 90) assert.equal(liveTensors(), during, `${name}: live tensors grow between steps 10 and 90`);
      },
    });
    assert.equal(liveTensors(), before + 1, `${name}: only the result is left`);
    out.dispose();
    noise.dispose();
  }
});
