// Bad input gives clear errors naming the option; diffusers' scheduler_config.json round-trips.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, randn, tidy, zeros } from "../../src/tensor/index.js";
import {
  classifierFreeGuidance,
  getSampler,
  img2img,
  img2imgStart,
  initialNoise,
  NoiseSchedule,
  sample,
  SAMPLER_NAMES,
  scheduleConfigFromDiffusers,
  scheduleConfigToDiffusers,
  seededInputs,
  type DenoiseModel,
} from "../../src/diffusion/index.js";

const zeroModel: DenoiseModel = (x) => x.mul(0);

test("unknown schedule names are errors naming the option and the valid values", () => {
  assert.throws(
    () => new NoiseSchedule({ betaSchedule: "cosine" as never }),
    /"betaSchedule" must be one of linear, scaled_linear, squaredcos_cap_v2; got "cosine"/,
  );
  assert.throws(() => new NoiseSchedule({ predictionType: "eps" as never }), /"predictionType" must be one of epsilon, v_prediction, sample/);
  assert.throws(() => new NoiseSchedule({ timestepSpacing: "even" as never }), /"timestepSpacing" must be one of leading, trailing, linspace/);
  assert.throws(() => new NoiseSchedule({ numTrainTimesteps: 0 }), /"numTrainTimesteps" must be an integer ≥ 2/);
  assert.throws(() => new NoiseSchedule({ betaEnd: 2 }), /"betaEnd" must be a number in \(0, 1\)/);
});

test("unknown sampler names list the registered ones", () => {
  assert.throws(() => getSampler("heun"), /unknown sampler "heun"; choose one of ddpm, ddim, euler, euler_ancestral, dpmpp_2m/);
  for (const name of SAMPLER_NAMES) assert.equal(getSampler(name).name, name);
});

test("steps < 1, > T or fractional are errors naming `steps`", () => {
  const schedule = new NoiseSchedule();
  const noise = zeros([1, 1, 2, 2]);
  for (const name of SAMPLER_NAMES) {
    for (const steps of [0, -3, 1001, 2.5]) {
      assert.throws(
        () => sample({ sampler: name, model: zeroModel, schedule, steps, noise, gen: new Generator(0) }),
        /steps must be an integer in \[1, 1000\]/,
        `${name} steps ${steps}`,
      );
    }
  }
  // leading spacing with steps_offset 1 cannot run 1000 DDIM steps (t would reach 1000)
  assert.throws(() => getSampler("ddim").prepare(schedule, 1000), /timestep 1000, outside \[0, 999\].*"trailing"/);
});

test("strength outside [0, 1] is an error naming `strength`", () => {
  const schedule = new NoiseSchedule();
  tidy(() => {
    const { gen, noise } = seededInputs([1], [1, 2, 2]);
    for (const strength of [-0.1, 1.5, Number.NaN]) {
      assert.throws(
        () => img2img({ sampler: "ddim", model: zeroModel, schedule, steps: 10, noise, gen, x0: noise, strength }),
        /strength must be a number in \[0, 1\]/,
      );
    }
  });
  assert.deepEqual(img2imgStart(50, 0.6), { startIndex: 20, runSteps: 30 });
  assert.deepEqual(img2imgStart(10, 1), { startIndex: 0, runSteps: 10 });
  assert.deepEqual(img2imgStart(10, 0.05), { startIndex: 10, runSteps: 0 });
});

test("negative guidance or rescale outside [0, 1] are errors naming the option", () => {
  tidy(() => {
    const cond = zeros([2, 3, 4]);
    const model = (x: ReturnType<typeof zeros>) => x;
    assert.throws(() => classifierFreeGuidance(model, cond, cond, -1), /guidance scale must be a finite number ≥ 0/);
    assert.throws(() => classifierFreeGuidance(model, cond, cond, 7.5, 1.5), /guidance rescale must be in \[0, 1\]/);
    assert.throws(() => classifierFreeGuidance(model, cond, zeros([2, 5, 4]), 7.5), /uncond \[2, 5, 4\] must match cond \[2, 3, 4\]/);
  });
});

test("η < 0, missing generators and mismatched generator counts are errors", () => {
  const schedule = new NoiseSchedule();
  tidy(() => {
    const noise = initialNoise([1, 2], [1, 2, 2]);
    assert.throws(() => sample({ sampler: "ddim", model: zeroModel, schedule, steps: 5, noise, eta: -1 }), /eta must be a finite number ≥ 0/);
    for (const name of ["ddpm", "euler_ancestral"]) {
      assert.throws(() => sample({ sampler: name as "ddpm", model: zeroModel, schedule, steps: 5, noise }), /draws fresh noise at each step: pass `gen`/);
    }
    assert.throws(
      () => sample({ sampler: "ddpm", model: zeroModel, schedule, steps: 5, noise, gen: [new Generator(1)] }),
      /gen holds 1 generators but the batch has 2 samples/,
    );
    assert.throws(
      () => sample({ sampler: "ddim", model: (x) => x.sum([1]), schedule, steps: 5, noise }),
      /the model returned shape \[2, 2, 2\] for input \[2, 1, 2, 2\]/,
    );
  });
});

test("diffusers scheduler_config.json: SD1.5's file reads with unknown keys ignored, wrong values named", () => {
  const sd15 = {
    _class_name: "PNDMScheduler",
    _diffusers_version: "0.6.0",
    beta_end: 0.012,
    beta_schedule: "scaled_linear",
    beta_start: 0.00085,
    num_train_timesteps: 1000,
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    trained_betas: null,
    clip_sample: false,
  };
  const cfg = scheduleConfigFromDiffusers(sd15);
  assert.equal(cfg.betaSchedule, "scaled_linear");
  assert.equal(cfg.stepsOffset, 1);
  assert.equal(cfg.timestepSpacing, undefined);
  assert.equal(cfg.predictionType, "epsilon");
  const back = scheduleConfigFromDiffusers(scheduleConfigToDiffusers(cfg));
  assert.deepEqual({ ...back, trainedBetas: back.trainedBetas ?? null }, { ...cfg, trainedBetas: cfg.trainedBetas ?? null });
  const v = scheduleConfigFromDiffusers({ ...sd15, prediction_type: "v_prediction", rescale_betas_zero_snr: true, timestep_spacing: "trailing" });
  assert.equal(v.predictionType, "v_prediction");
  assert.equal(v.rescaleZeroTerminalSnr, true);
  assert.equal(v.timestepSpacing, "trailing");

  assert.throws(() => scheduleConfigFromDiffusers({ beta_schedule: "cosine" }, "model/scheduler/scheduler_config.json"),
    /model\/scheduler\/scheduler_config.json: "beta_schedule" must be one of linear, scaled_linear, squaredcos_cap_v2; got "cosine"/);
  assert.throws(() => scheduleConfigFromDiffusers({ num_train_timesteps: "1000" }), /"num_train_timesteps" must be a number/);
  assert.throws(() => scheduleConfigFromDiffusers({ clip_sample: 1 }), /"clip_sample" must be true or false/);
  assert.throws(() => scheduleConfigFromDiffusers([]), /expected a JSON object/);
  assert.throws(() => scheduleConfigFromDiffusers({ trained_betas: [0.1, 0.2] }), /"trainedBetas" holds 2 values but numTrainTimesteps is 1000/);
});

test("per-sample timesteps: tensor and number[] forms agree; out-of-range t is an error", () => {
  const s = new NoiseSchedule();
  tidy(() => {
    const x = randn([3, 2, 2, 2], new Generator(3));
    const a = s.gatherAt(s.sqrtAlphasCumprod, [0, 500, 999]);
    assert.deepEqual(a.shape, [3, 1, 1, 1]);
    assert.deepEqual(Array.from(a.toFloat32Array()), [0, 500, 999].map((t) => Math.fround(Math.sqrt(s.alphasCumprod[t]!))));
    assert.throws(() => s.gatherAt(s.sqrtAlphasCumprod, [1000]), /timestep 1000 is not an integer in \[0, 999\]/);
    assert.equal(x.shape[0], 3);
  });
});
