// Shared helpers for the diffusion tests: the golden file, tolerances, the dummy models the
// golden script also uses (scripts/golden/diffusion/make_golden.py).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { cat, Tensor, tensor, tidy } from "../../src/tensor/index.js";
import { NoiseSchedule, type ScheduleConfig } from "../../src/diffusion/index.js";

export interface Summary {
  shape: number[];
  sum: number;
  mean: number;
  absSum: number;
  pick: number[];
  values: number[];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const golden: any = JSON.parse(
  readFileSync(new URL("../golden/diffusion/golden.json", import.meta.url), "utf8"),
);

/** |a − b| ≤ atol + rtol·|b|. */
export function close(actual: number, expected: number, rtol: number, atol: number, what: string): void {
  const ok = Math.abs(actual - expected) <= atol + rtol * Math.abs(expected);
  assert.ok(ok, `${what}: got ${actual}, expected ${expected} (rtol ${rtol}, atol ${atol})`);
}

export function allClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) close(actual[i]!, expected[i]!, rtol, atol, `${what}[${i}]`);
}

/** Compares a tensor with a golden summary (sum, mean, |x| sum, picked values). */
export function matchSummary(x: Tensor, s: Summary, what: string, rtol = 1e-5, atol = 1e-5): void {
  assert.deepEqual(x.shape, s.shape, `${what}: shape`);
  const data = x.toFloat64Array();
  let sum = 0;
  let absSum = 0;
  for (const v of data) {
    sum += v;
    absSum += Math.abs(v);
  }
  // sums: tolerance relative to the magnitude summed, not to a sum that may cancel to ≈ 0
  close(sum, s.sum, 0, rtol * s.absSum + atol, `${what}: sum`);
  close(absSum, s.absSum, rtol, atol, `${what}: |x| sum`);
  close(sum / data.length, s.mean, 0, (rtol * s.absSum + atol) / data.length, `${what}: mean`);
  s.pick.forEach((idx, k) => close(data[idx]!, s.values[k]!, rtol, atol, `${what}: value at ${idx}`));
}

const GOLDEN_SCHEDULES: Record<string, Partial<ScheduleConfig>> = {
  sd15: {},
  linear: { betaStart: 0.0001, betaEnd: 0.02, betaSchedule: "linear" },
  cosine: { betaSchedule: "squaredcos_cap_v2" },
  sd15_zero_snr: { rescaleZeroTerminalSnr: true },
  linear_zero_snr: { betaStart: 0.0001, betaEnd: 0.02, betaSchedule: "linear", rescaleZeroTerminalSnr: true },
  sd15_v_zero_snr_trailing: { rescaleZeroTerminalSnr: true, predictionType: "v_prediction", timestepSpacing: "trailing" },
  sd15_sample_pred: { predictionType: "sample" },
};

export function goldenSchedule(key: string): NoiseSchedule {
  const cfg = GOLDEN_SCHEDULES[key];
  assert.ok(cfg !== undefined, `no schedule "${key}" in the test table`);
  return new NoiseSchedule(cfg);
}

/** The golden script's dummy network: 0.8·cos(t/1500)·x + 0.1·tanh(x) + 0.01·sin(t/50). */
export function dummyModel(x: Tensor, t: number): Tensor {
  return tidy(() => x.mul(0.8 * Math.cos(t / 1500)).add(x.tanh().mul(0.1)).add(0.01 * Math.sin(t / 50)));
}

/** Its conditional variant: + 0.3·mean(cond)·cos(x) per sample. */
export function condModel(x: Tensor, t: number, cond: Tensor): Tensor {
  return tidy(() => {
    const shift = cond.mean([1, 2]).reshape([cond.shape[0]!, 1, 1, 1]);
    return dummyModel(x, t).add(shift.mul(x.cos()).mul(0.3));
  });
}

export function fromList(values: number[], shape: number[]): Tensor {
  return tensor(new Float32Array(values), shape);
}

export { cat };
