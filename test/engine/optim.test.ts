// AdamW and Adafactor against torch.optim.AdamW and a transcription of transformers' Adafactor,
// gradient clipping against torch.nn.utils.clip_grad_norm_, learning-rate schedules against
// diffusers' get_scheduler lambdas (all in scripts/golden/engine/make_golden.py), and optimizer
// state save → restore → identical next step.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Generator, keep, randn, tidy, dispose, type Tensor } from "../../src/tensor/index.js";
import { AdamW, Adafactor, LR_SCHEDULES, clipGradNorm, lrAt, scaleGrads, type Optimizer } from "../../src/optim/index.js";

interface OptGolden { losses: number[]; params: Record<string, number[]>; state: Record<string, number[]> }
const golden = JSON.parse(readFileSync("test/golden/engine/optim.json", "utf8")) as {
  adamw: OptGolden; adafactor: OptGolden; adafactor_beta1_wd: OptGolden;
  clip: Record<string, { scale: number; maxNorm: number; norm: number; grads: Record<string, number[]> }>;
  schedules: { kind: string; warmupSteps: number; totalSteps: number; baseLr: number; lrs: number[] }[];
};

function assertClose(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>, atol = 2e-6, rtol = 1e-5): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    assert.ok(Math.abs(a - b) <= atol + rtol * Math.abs(b), `${what}[${i}]: ${a}, PyTorch gives ${b}`);
  }
}

/** The problem of make_golden.py's opt_problem(): mean((X·W + b − Y)²) + sum(sin(K)·C). */
function problem() {
  const r = (shape: number[], seed: number) => randn(shape, new Generator(seed));
  const params: [string, Tensor][] = [
    ["W", keep(r([4, 3], 500)).setRequiresGrad(true)],
    ["b", keep(r([3], 501)).setRequiresGrad(true)],
    ["K", keep(r([2, 3, 2, 2], 502)).setRequiresGrad(true)],
  ];
  const [X, Y, C] = keep([r([5, 4], 503), r([5, 3], 504), r([2, 3, 2, 2], 505)]);
  const [W, b, K] = params.map(([, p]) => p) as [Tensor, Tensor, Tensor];
  const loss = (scale = 1): number =>
    tidy(() => {
      const l = X.matmul(W).add(b).sub(Y).square().mean().add(K.sin().mul(C).sum()).mul(scale);
      l.backward();
      return l.item();
    });
  const free = () => dispose([params.map(([, p]) => p), X, Y, C]);
  return { params, loss, free };
}

function runSteps(opt: Optimizer, loss: () => number, steps: number): number[] {
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    opt.zeroGrad();
    losses.push(loss());
    opt.step();
  }
  return losses;
}

function checkAgainst(name: string, g: OptGolden, make: (params: [string, Tensor][]) => Optimizer): void {
  const { params, loss, free } = problem();
  const opt = make(params);
  const losses = runSteps(opt, loss, 5);
  assertClose(`${name} losses`, losses, g.losses);
  for (const [n, p] of params) assertClose(`${name} param ${n}`, p.toFloat64Array(), g.params[n]!);
  const state = opt.stateDict().tensors;
  assert.deepEqual([...state.keys()].sort(), Object.keys(g.state).sort(), `${name} state slots`);
  for (const [k, t] of state) assertClose(`${name} state ${k}`, t.toFloat64Array(), g.state[k]!);
  opt.dispose();
  free();
}

test("AdamW(0.9, 0.999, wd 1e-2): 5 steps match torch.optim.AdamW (params and moments)", () => {
  checkAgainst("adamw", golden.adamw, (ps) => new AdamW(ps, { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 }));
});

test("Adafactor (no relative step, no parameter scaling, clip 1.0): 5 steps match transformers' step", () => {
  checkAgainst("adafactor", golden.adafactor, (ps) => new Adafactor(ps, { lr: 1e-2, clipThreshold: 1.0 }));
});

test("Adafactor with beta1 0.9 and weight decay matches transformers' step", () => {
  checkAgainst("adafactor_beta1_wd", golden.adafactor_beta1_wd, (ps) =>
    new Adafactor(ps, { lr: 1e-2, clipThreshold: 1.0, beta1: 0.9, weightDecay: 1e-2 }));
});

for (const [key, c] of Object.entries(golden.clip)) {
  test(`clipGradNorm matches clip_grad_norm_ (${key})`, () => {
    const { params, loss, free } = problem();
    loss(c.scale);
    const norm = clipGradNorm(params.map(([, p]) => p), c.maxNorm);
    assert.ok(Math.abs(norm - c.norm) <= 1e-5 * c.norm, `norm ${norm}, PyTorch ${c.norm}`);
    for (const [n, p] of params) assertClose(`clipped grad ${n}`, p.grad!.toFloat64Array(), c.grads[n]!);
    free();
  });
}

test("clipGradNorm with maxNorm 0 only measures; scaleGrads multiplies every gradient", () => {
  const { params, loss, free } = problem();
  loss();
  const before = params.map(([, p]) => p.grad!.toFloat64Array());
  const norm = clipGradNorm(params.map(([, p]) => p), 0);
  const direct = Math.sqrt(before.reduce((s, g) => s + g.reduce((a, v) => a + v * v, 0), 0));
  assert.ok(Math.abs(norm - direct) < 1e-5 * direct, `${norm} vs ${direct}`);
  scaleGrads(params.map(([, p]) => p), 0.25);
  params.forEach(([, p], i) => assertClose("scaled", p.grad!.toFloat64Array(), before[i]!.map((v) => v * 0.25), 0, 1e-7));
  free();
});

test("learning-rate schedules match diffusers' get_scheduler through LambdaLR", () => {
  assert.deepEqual([...new Set(golden.schedules.map((s) => s.kind))].sort(), [...LR_SCHEDULES].sort());
  for (const s of golden.schedules) {
    const ours = s.lrs.map((_, step) => lrAt(step, s.baseLr, { kind: s.kind as (typeof LR_SCHEDULES)[number], warmupSteps: s.warmupSteps, totalSteps: s.totalSteps }));
    assertClose(`${s.kind} warmup ${s.warmupSteps}`, ours, s.lrs, 1e-12, 1e-12);
  }
});

for (const kind of ["adamw", "adafactor"] as const) {
  test(`${kind}: state saved after 3 steps and restored into a fresh optimizer gives a bit-identical 4th step`, () => {
    const make = (ps: [string, Tensor][]): Optimizer =>
      kind === "adamw" ? new AdamW(ps, { lr: 1e-2 }) : new Adafactor(ps, { lr: 1e-2, beta1: 0.9 });
    const a = problem();
    const optA = make(a.params);
    runSteps(optA, a.loss, 3);
    // Save: copies of the state (as a checkpoint would hold) and of the weights.
    const saved = optA.stateDict();
    const savedTensors = new Map([...saved.tensors].map(([k, t]) => [k, keep(t.clone())]));
    const savedMeta = JSON.parse(JSON.stringify(saved.meta)) as typeof saved.meta;
    assert.deepEqual(Object.values(savedMeta.steps), [3, 3, 3]);
    const b = problem();
    a.params.forEach(([, p], i) => b.params[i]![1].copy_(p));
    const optB = make(b.params);
    optB.loadStateDict({ tensors: savedTensors, meta: savedMeta });
    runSteps(optA, a.loss, 1);
    runSteps(optB, b.loss, 1);
    a.params.forEach(([n, p], i) => {
      assert.deepEqual(b.params[i]![1].toFloat32Array(), p.toFloat32Array(), `${kind} ${n} after the restored step`);
    });
    assert.deepEqual(optB.stateDict().meta.steps, { W: 4, b: 4, K: 4 });
    assert.throws(
      () => new AdamW(a.params, { lr: 1 }).loadStateDict(kind === "adamw" ? { ...saved, meta: { ...saved.meta, kind: "adafactor" } } : saved),
      /optimizer state is for adafactor, but this run uses adamw/,
    );
    dispose([...savedTensors.values()]);
    optA.dispose(); optB.dispose(); a.free(); b.free();
  });
}
