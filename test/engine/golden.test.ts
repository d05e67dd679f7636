// Every op of src/tensor against PyTorch: outputs and the gradients of sum(out·w) with respect to
// each float input, from scripts/golden/engine/make_golden.py (test/golden/engine/ops.json).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, randn, tidy, type Tensor } from "../../src/tensor/index.js";
import { NOT_DIFFERENTIABLE, OPS, loadGoldenOps, makeInput } from "./opTable.js";

const golden = loadGoldenOps();

/** Largest violation of |a − b| ≤ atol + rtol·|b|, with its index (−1 when all are close). */
export function worst(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol: number): { index: number; excess: number } {
  let index = -1;
  let excess = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    const over = Math.abs(a - b) - (atol + rtol * Math.abs(b));
    if (!(over <= excess)) {
      if (Number.isNaN(a) !== Number.isNaN(b) || over > excess || Number.isNaN(over)) {
        if (!(Number.isNaN(a) && Number.isNaN(b))) {
          index = i;
          excess = Number.isNaN(over) ? Infinity : over;
        }
      }
    }
  }
  return { index, excess };
}

function assertClose(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>, atol = 1e-5, rtol = 1e-5): void {
  assert.equal(actual.length, expected.length, `${what}: ${actual.length} values, PyTorch has ${expected.length}`);
  const w = worst(actual, expected, atol, rtol);
  if (w.index >= 0) {
    assert.fail(`${what}: element ${w.index} is ${actual[w.index]}, PyTorch gives ${expected[w.index]}`);
  }
}

test("the TS op table and the golden file list the same ops", () => {
  const ids = new Set(golden.map((c) => c.id));
  assert.deepEqual([...Object.keys(OPS)].filter((k) => !ids.has(k)), [], "ops without golden numbers");
  assert.deepEqual([...ids].filter((k) => !(k in OPS)), [], "golden ops without a TS implementation");
  assert.ok(golden.length >= 120, `only ${golden.length} golden cases`);
  for (const id of NOT_DIFFERENTIABLE) assert.ok(ids.has(id), id);
});

for (const c of golden) {
  test(`${c.id} matches PyTorch${c.diff ? " (value and gradients)" : ""}`, () => {
    tidy(() => {
      const op = OPS[c.id]!;
      const xs = c.inputs.map((s) => makeInput(s));
      if (c.diff) for (const x of xs) if (x.dtype === "f32") x.setRequiresGrad(true);
      const y = op(...xs);
      assert.deepEqual(y.shape, c.shape, `${c.id}: output shape`);
      assertClose(`${c.id} output`, y.toFloat64Array(), c.out);
      if (!c.diff) return;
      const w = randn(c.shape, new Generator(c.wSeed));
      y.mul(w).sum().backward();
      c.grads!.forEach((expected, i) => {
        const x: Tensor = xs[i]!;
        const g = x.dtype === "f32" ? x.grad : null;
        if (expected === null) {
          assert.ok(g === null || g.abs().amax().item() === 0, `${c.id}: input ${i} should get no gradient`);
          return;
        }
        assert.ok(g !== null, `${c.id}: input ${i} got no gradient`);
        assertClose(`${c.id} grad of input ${i}`, g.toFloat64Array(), expected);
      });
    });
  });
}
