// Flow-matching training arithmetic against train_dreambooth_sd3.py (v0.30) as recorded in the
// sd3-transformer case, the density samplers against closed forms, and the DPO noising hook.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { flowMatchConfigFromJson, flowTrainingSigmas } from "../../src/diffusion/flow/scheduler.js";
import {
  flowLossWeighting, flowMatchingLoss, flowMatchingNoising, flowNoisy, flowTarget, flowTimestepsFromDensity,
  preconditionFlowPrediction, sampleFlowDensity,
} from "../../src/diffusion/flow/training.js";
import { readJsonObject } from "../../src/util/config-json.js";
import { Generator, cat } from "../../src/tensor/index.js";
import { assertClose, referenceCase, relativeError } from "../_reference.js";

const ref = referenceCase("sd3-transformer");
const cfgPath = join(ref.dir, "scheduler", "scheduler_config.json");
const config = flowMatchConfigFromJson(readJsonObject(cfgPath, "scheduler"), cfgPath);

test("train_dreambooth_sd3: noisy input, target, preconditioned prediction, weightings and the six losses", () => {
  const x0 = ref.tensor("train_x0"), noise = ref.tensor("train_noise");
  const indices = ref.array("train_indices");
  const table = flowTrainingSigmas(config);
  const sigmas = indices.map((i) => table.sigmas[i]!);
  assert.deepEqual(sigmas, ref.array("train_sigmas"));
  const noisy = flowNoisy(x0, noise, sigmas);
  // same float32 arithmetic as the script: measured 0
  assertClose(noisy, ref.tensor("train_noisy_model_input"), 1e-6, "noisy");
  assertClose(flowTarget(x0, noise), ref.tensor("train_target_noise_minus_x0"), 1e-6, "target");
  const pred = ref.tensor("train_model_pred");
  const pre = preconditionFlowPrediction(pred, noisy, sigmas);
  assertClose(pre, ref.tensor("train_model_pred_preconditioned"), 1e-6, "preconditioned");
  for (const [scheme, name] of [["sigma_sqrt", "sigma_sqrt"], ["cosmap", "cosmap"], ["logit_normal", "logit_normal"]] as const) {
    const w = flowLossWeighting(scheme, sigmas);
    assert.ok(relativeError(w, ref.array(`train_weighting_${name}`)) < 1e-6, `${scheme} weighting`);
    const losses = ref.json.values!.train_losses as Record<string, number>;
    const l1 = flowMatchingLoss(pre, x0, w).item();
    const l0 = flowMatchingLoss(pred, flowTarget(x0, noise), w).item();
    // measured ≤ 1e-7 relative (a mean over 2048 float32 terms in another order)
    assert.ok(Math.abs(l1 - losses[`${name}_precondition1`]!) / losses[`${name}_precondition1`]! < 1e-5, `${name} precondition 1: ${l1}`);
    assert.ok(Math.abs(l0 - losses[`${name}_precondition0`]!) / losses[`${name}_precondition0`]! < 1e-5, `${name} precondition 0: ${l0}`);
  }
});

test("flow densities: logit-normal, mode and uniform against closed forms; ⌊u·T⌋ into the shifted table", () => {
  const n = 20000;
  const ln = sampleFlowDensity(n, new Generator(1), { scheme: "logit_normal", logitMean: 0.5, logitStd: 1 });
  // the median of σ(N(0.5, 1)) is σ(0.5) = 0.6225
  const median = [...ln].sort((a, b) => a - b)[n / 2]!;
  assert.ok(Math.abs(median - 1 / (1 + Math.exp(-0.5))) < 0.015, `logit-normal median ${median}`);
  const uni = sampleFlowDensity(n, new Generator(2), { scheme: "uniform" });
  assert.ok(Math.abs(uni.reduce((a, b) => a + b, 0) / n - 0.5) < 0.01);
  // mode with scale 0 is 1 − u: uniform again; with the same generator it is exactly 1 − u
  const m0 = sampleFlowDensity(5, new Generator(3), { scheme: "mode", modeScale: 0 });
  const u3 = sampleFlowDensity(5, new Generator(3), { scheme: "uniform" });
  m0.forEach((v, i) => assert.ok(Math.abs(v - (1 - u3[i]!)) < 1e-6));
  const m = sampleFlowDensity(5, new Generator(3), { scheme: "mode", modeScale: 1.29 });
  m.forEach((v, i) => { const u = u3[i]!; assert.ok(Math.abs(v - (1 - u - 1.29 * (Math.cos((Math.PI * u) / 2) ** 2 - 1 + u))) < 1e-6); });
  const { indices, timesteps } = flowTimestepsFromDensity([0.1, 0.75, 0.99999], config);
  assert.deepEqual(indices, [100, 750, 999]);
  assert.deepEqual(indices.slice(0, 2), ref.array("train_indices"));
  assert.deepEqual(timesteps.slice(0, 2), ref.array("train_timesteps"));
});

test("flowMatchingNoising (the DPO step's hook): σ from the drawn t, both images of a pair get the same x_t recipe", () => {
  const noising = flowMatchingNoising(config);
  const t = noising.drawTimesteps(2, new Generator(7));
  const table = flowTrainingSigmas(config);
  assert.ok(t.every((v) => Array.from(table.timesteps).includes(v)), "drawn timesteps come from the training table");
  const x0 = ref.tensor("train_x0"), eps = ref.tensor("train_noise");
  const recorded = ref.array("train_timesteps");
  const noisy = noising.noise(x0, eps, recorded);
  assertClose(noisy, ref.tensor("train_noisy_model_input"), 1e-6, "hook noisy");
  assert.deepEqual(noising.modelTimesteps(recorded, "cpu").toArray(), recorded);
  // a pair batch [chosen, rejected] with shared ε and t: equal images give equal x_t
  const pair = noising.noise(cat([x0.slice(0, 0, 1), x0.slice(0, 0, 1)]), cat([eps.slice(0, 0, 1), eps.slice(0, 0, 1)]), [recorded[0]!, recorded[0]!]);
  assert.equal(relativeError(Array.from(pair.slice(0, 0, 1).toFloat32Array()), Array.from(pair.slice(0, 1, 2).toFloat32Array())), 0);
});
