// Finite-difference gradient checks in float64 for every differentiable op of the golden table:
// the analytic gradient of f(x) = sum(op(x)·w) from backward() against central differences
// (f(x + h·e_i) − f(x − h·e_i)) / 2h with h = 1e-6.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, noGrad, randn, tensor, tidy, type Tensor } from "../../src/tensor/index.js";
import { NOT_DIFFERENTIABLE, OPS, loadGoldenOps, makeInput } from "./opTable.js";

const H = 1e-6;
const SAMPLES = 8; // elements perturbed per input (spread over the tensor)

const cases = loadGoldenOps().filter((c) => c.diff);

test("every differentiable op of the table is checked", () => {
  const differentiable = Object.keys(OPS).filter((id) => !NOT_DIFFERENTIABLE.has(id));
  assert.deepEqual(differentiable.sort(), cases.map((c) => c.id).sort());
});

for (const c of cases) {
  test(`${c.id}: gradient matches finite differences (f64)`, () => {
    tidy(() => {
      const op = OPS[c.id]!;
      const xs = c.inputs.map((s) => makeInput(s, "f64"));
      const w = randn(c.shape, new Generator(c.wSeed)).to("f64");
      const f = (inputs: Tensor[]): number => tidy(() => noGrad(() => op(...inputs).mul(w).sum().item()));
      const leaves = xs.map((x) => (x.dtype === "f64" ? x.detach().setRequiresGrad(true) : x));
      const y = op(...leaves);
      assert.equal(y.dtype, "f64", `${c.id} should keep float64`);
      y.mul(w).sum().backward();
      leaves.forEach((leaf, i) => {
        if (leaf.dtype !== "f64") return;
        const grad = leaf.grad?.toFloat64Array() ?? new Float64Array(leaf.size);
        const base = leaf.toFloat64Array();
        const n = base.length;
        const picks = new Set<number>();
        for (let k = 0; k < Math.min(SAMPLES, n); k++) picks.add(Math.floor((k * n) / Math.min(SAMPLES, n)));
        picks.add(n - 1);
        for (const j of picks) {
          const at = (delta: number): number => {
            const moved = base.slice();
            moved[j] = moved[j]! + delta;
            const inputs = xs.map((x, k) => (k === i ? tensor(moved, leaf.shape) : x));
            return f(inputs);
          };
          const numeric = (at(H) - at(-H)) / (2 * H);
          const analytic = grad[j]!;
          const tol = 1e-6 + 1e-5 * Math.abs(numeric);
          assert.ok(
            Math.abs(numeric - analytic) <= tol,
            `${c.id}: d/d input${i}[${j}] is ${analytic} from backward, ${numeric} by finite differences`,
          );
        }
      });
    });
  });
}
