// A DPO step with the policy's gradient checkpointing (StepModels.policyCheckpointed) gives the
// plain step's loss, metrics and gradients: tiny SDXL reference UNet, full fine-tuning, with a
// policy that differs from the reference so the loss is not ln 2.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { referenceCase } from "../_reference.js";
import { disposeTextToImageModel, encodePrompts, loadModelFolder } from "../../src/models/pipeline.js";
import { dpoStep, type StepModels } from "../../src/train/dpo-step.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { Generator, noGrad, rand, randn } from "../../src/tensor/index.js";

test("dpoStep with policyCheckpointed = the plain step (loss, metrics, gradients)", () => {
  const folder = referenceCase("sdxl-pipeline").pipelineFolder();
  const model = loadModelFolder(folder);
  const reference = model.unet.deepCopy().requiresGrad(false);
  try {
    // move the policy off the reference
    noGrad(() => { for (const p of model.unet.parameters()) p.add_(randn(p.shape, new Generator(p.size)).mul(0.01)); });
    const pixels = rand([4, 3, 64, 64], new Generator(5)).mul(2).sub(1);
    const base: StepModels = {
      policy: (x, t, c) => model.unet.forward(x, t, c),
      reference: (x, t, c) => reference.forward(x, t, c),
      encodePrompts: (p, m) => encodePrompts(model, p, { micro: m, size: 64 }),
      encodeImages: (px) => model.vae!.encodeLatents(px),
    };
    const opts = { method: "dpo" as const, beta: 5000, schedule: new NoiseSchedule(model.scheduler), predictionType: "epsilon" as const, promptDropout: 0.2, lossScale: 0.5 };
    const grads = () => model.unet.trainableParameters().map(([, p]) => Array.from(p.grad!.toFloat32Array()));
    model.unet.zeroGrad();
    const a = dpoStep(base, { prompts: ["a red apple", "a table"], pixels }, new Generator(1), opts);
    const ga = grads();
    model.unet.zeroGrad();
    const b = dpoStep({ ...base, policyCheckpointed: (x, t, c) => model.unet.forwardCheckpointed(x, t, c) }, { prompts: ["a red apple", "a table"], pixels }, new Generator(1), opts);
    const gb = grads();
    model.unet.zeroGrad();
    pixels.dispose();
    assert.ok(Math.abs(a.loss - Math.LN2) > 1e-3, `the loss moved off ln 2 (${a.loss})`);
    assert.equal(b.loss, a.loss); // the same forward values: the checkpointed forward runs the same ops
    assert.equal(b.policyMse, a.policyMse);
    let diff = 0;
    let scale = 0;
    ga.forEach((g, i) => g.forEach((v, j) => { diff = Math.max(diff, Math.abs(v - gb[i]![j]!)); scale = Math.max(scale, Math.abs(v)); }));
    process.stdout.write(`# checkpointed DPO step: gradient difference ${(diff / scale).toExponential(2)} of the largest\n`);
    assert.ok(diff / scale <= 2e-5, `gradients differ by ${diff / scale} of the largest`); // measured 6.6e-6
  } finally {
    reference.dispose();
    disposeTextToImageModel(model);
    rmSync(folder, { recursive: true, force: true });
  }
});
