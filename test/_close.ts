// Float comparisons for values computed along different paths (batch size, thread count, BLAS or
// oneDNN kernel). Such values agree to float32 rounding, not bit for bit: each op rounds at
// ε = 2⁻²⁴ ≈ 6e-8 relative, and a different kernel reorders the sums inside a matmul, a conv or a
// reduction, so a network of depth d typically differs by ~d·√k·ε (k = reduction length) relative
// to the tensor's scale. The tolerances below are stated per call against max|expected|.
import assert from "node:assert/strict";
import type { Tensor } from "../src/tensor/index.js";

/** max |a − b| / max |b| (one scale for the tensor, so elements near zero do not dominate). */
export function scaledError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, "scaledError: lengths differ");
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  return scale === 0 ? diff : diff / scale;
}

/** Asserts scaledError ≤ tol and returns it. */
export function assertNear(actual: ArrayLike<number> | Tensor, expected: ArrayLike<number> | Tensor, tol: number, what: string): number {
  const a = "toFloat64Array" in actual ? (actual as Tensor).toFloat64Array() : (actual as ArrayLike<number>);
  const b = "toFloat64Array" in expected ? (expected as Tensor).toFloat64Array() : (expected as ArrayLike<number>);
  const err = scaledError(a, b);
  assert.ok(err <= tol, `${what}: scaled error ${err.toExponential(2)} > ${tol}`);
  return err;
}

/**
 * 8-bit images from float computations along different paths: a value on a rounding boundary may
 * move by one level; more than one level, or many moved values, is a real difference.
 */
export function assertPixelsNear(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, maxFraction = 0.05): void {
  assert.equal(actual.length, expected.length, `${what}: sizes differ`);
  let worst = 0;
  let moved = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    worst = Math.max(worst, d);
    if (d > 0) moved++;
  }
  assert.ok(worst <= 1 && moved <= expected.length * maxFraction, `${what}: ${moved} of ${expected.length} values moved, by up to ${worst} levels`);
}
