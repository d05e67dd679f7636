// The benchmark's small UNet (bench/cases/unet-step.ts) is the same network as its PyTorch twin
// (bench/torch/unet_step.py): same parameter names and count, same output from the same seed, same
// losses over three AdamW steps (scripts/golden/engine/unet_bench.py → test/golden/engine/unet_bench.json).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Generator, keep, mseLoss, noGrad, randint, randn, setNumThreads, tidy, dispose } from "../../src/tensor/index.js";
import { setInitSeed } from "../../src/nn/index.js";
import { AdamW } from "../../src/optim/index.js";
import { SmallUNet } from "../../bench/cases/unet-step.js";
import { collectCases } from "../../bench/run.js";

const golden = JSON.parse(readFileSync("test/golden/engine/unet_bench.json", "utf8")) as {
  params: number; names: string[]; outFirst: number[]; outMean: number; outAbsMean: number; losses: number[];
};

test("bench UNet: names, parameter count, forward output and 3 AdamW steps match PyTorch", () => {
  setNumThreads(1);
  setInitSeed(0);
  const model = new SmallUNet();
  assert.deepEqual(model.namedParameters().map(([n]) => n), golden.names);
  assert.equal(model.numParameters(), golden.params);
  const g = new Generator(1);
  const [x, target] = keep([randn([16, 3, 32, 32], g), randn([16, 3, 32, 32], g)]);
  const t = keep(randint(0, 1000, [16], g));
  tidy(() => {
    const out = noGrad(() => model.forward(x, t));
    const first = out.reshape([-1]).slice(0, 0, 64).toFloat64Array();
    first.forEach((v, i) => assert.ok(Math.abs(v - golden.outFirst[i]!) < 1e-4 + 1e-4 * Math.abs(golden.outFirst[i]!), `out[${i}] ${v} vs ${golden.outFirst[i]}`));
    assert.ok(Math.abs(out.mean().item() - golden.outMean) < 1e-5);
    assert.ok(Math.abs(out.abs().mean().item() - golden.outAbsMean) < 1e-5 * golden.outAbsMean);
  });
  const opt = new AdamW(model.trainableParameters(), { lr: 1e-3, betas: [0.9, 0.999], weightDecay: 1e-2 });
  const losses = golden.losses.map(() => tidy(() => {
    opt.zeroGrad();
    const loss = mseLoss(model.forward(x, t), target);
    loss.backward();
    opt.step();
    return loss.item();
  }));
  losses.forEach((l, i) => assert.ok(Math.abs(l - golden.losses[i]!) < 1e-4 * golden.losses[i]!, `loss ${i}: ${l} vs PyTorch ${golden.losses[i]}`));
  opt.dispose(); model.dispose(); dispose([x, target, t]);
});

test("bench/run.ts collects every exported case of bench/cases", async () => {
  const names = (await collectCases()).map((c) => c.name);
  assert.ok(names.includes("engine") && names.includes("unet-step"), names.join(", "));
  assert.equal(new Set(names).size, names.length);
});
