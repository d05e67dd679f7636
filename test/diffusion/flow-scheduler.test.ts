// FlowMatchEulerDiscreteScheduler: training table, set_timesteps (static shift for SD3, dynamic
// μ shift for Flux) against the recorded diffusers values.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  calculateShift, flowMatchConfigFromJson, flowSetTimesteps, flowTrainingSigmas, linspace64,
} from "../../src/diffusion/flow/scheduler.js";
import { readJsonObject } from "../../src/util/config-json.js";
import { referenceCase, relativeError } from "../_reference.js";

function config(caseName: string, sub: string) {
  const c = referenceCase(caseName);
  const path = join(c.dir, sub, "scheduler_config.json");
  return { ref: c, cfg: flowMatchConfigFromJson(readJsonObject(path, "scheduler"), path) };
}

test("sd3-transformer scheduler (shift 3): set_timesteps(4) sigmas and timesteps exactly", () => {
  const { ref, cfg } = config("sd3-transformer", "scheduler");
  const s = flowSetTimesteps(cfg, 4);
  assert.deepEqual(Array.from(s.sigmas), ref.array("schedule_sigmas"));
  assert.deepEqual(Array.from(s.timesteps), ref.array("schedule_timesteps"));
  assert.deepEqual(Array.from(s.timesteps), ref.array("pipe_timesteps"));
});

test("sd3-pipeline scheduler: the run's timesteps (1000, 857.69, 602.15, 8.93) and sigmas exactly", () => {
  const { ref, cfg } = config("sd3-pipeline", "pipeline/scheduler");
  const s = flowSetTimesteps(cfg, 4);
  assert.deepEqual(Array.from(s.sigmas), ref.array("sigmas"));
  assert.deepEqual(Array.from(s.timesteps), ref.array("timesteps"));
});

test("sd3 training table: timesteps[indices] and get_sigmas of train_dreambooth_sd3 exactly", () => {
  const { ref, cfg } = config("sd3-transformer", "scheduler");
  const table = flowTrainingSigmas(cfg);
  const idx = ref.array("train_indices");
  assert.deepEqual(idx.map((i) => table.timesteps[i]!), ref.array("train_timesteps"));
  assert.deepEqual(idx.map((i) => table.sigmas[i]!), ref.array("train_sigmas"));
  assert.equal(table.sigmas[0], 1);
});

test("flux dynamic shift: mu = calculate_shift(tokens), sigmas linspace(1, 1/4, 4) shifted by exp(mu)", () => {
  for (const [caseName, sub, tokens, prefix] of [
    ["flux-pipeline", "pipeline/scheduler", 64, ""], ["flux-transformer", "scheduler", 16, "pipe_"],
  ] as const) {
    const { ref: c, cfg } = config(caseName, sub);
    const mu = calculateShift(tokens, cfg);
    assert.ok(Math.abs(mu - ((c.json.values as { mu: number }).mu)) < 1e-12, `${caseName} mu ${mu}`);
    const s = flowSetTimesteps(cfg, 4, { mu, sigmas: linspace64(1, 1 / 4, 4) });
    assert.deepEqual(Array.from(s.sigmas), c.array(`${prefix}sigmas`), `${caseName} sigmas`);
    assert.deepEqual(Array.from(s.timesteps), c.array(`${prefix}timesteps`), `${caseName} timesteps`);
  }
  assert.throws(() => flowSetTimesteps({ ...config("flux-pipeline", "pipeline/scheduler").cfg }, 4), /pass mu/);
  assert.ok(relativeError([calculateShift(256, config("flux-pipeline", "pipeline/scheduler").cfg)], [0.5]) < 1e-12);
});
