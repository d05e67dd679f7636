// Per-block gradient checkpointing (src/models/unet/checkpoint.ts) gives the gradients of plain
// backward: on the tiny SDXL reference UNet (text_time conditioning, two-layer transformer
// blocks), the same with LoRA adapters only trainable, and the SD1.5 reference UNet at an odd
// latent size (explicit upsample sizes). Relative max error over all gradients; measured values in
// the comments (float32: recomputation and the multi-output surrogate reorder a few sums).
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { referenceCase, relativeError } from "../_reference.js";
import { loadModelFolder, disposeTextToImageModel, encodePrompts } from "../../src/models/pipeline.js";
import type { UNet2DConditionModel } from "../../src/models/unet/index.js";
import { injectLora } from "../../src/nn/lora.js";
import { Generator, noGrad, randn, tensor, tidy, type Tensor } from "../../src/tensor/index.js";

function gradients(unet: UNet2DConditionModel): Map<string, number[]> {
  return new Map(unet.trainableParameters().map(([n, p]) => [n, Array.from(p.grad?.toFloat32Array() ?? new Float32Array(p.size))]));
}

/** Plain backward and checkpointed backward of sum(out · w); returns the worst relative gradient error. */
function compare(unet: UNet2DConditionModel, x: Tensor, t: Tensor, cond: Tensor): { output: number; grads: number; zeroGrads: number } {
  const w = randn(x.shape, new Generator(9));
  unet.zeroGrad();
  const plainOut = tidy(() => {
    const out = unet.forward(x, t, cond);
    out.mul(w).sum().backward();
    return Array.from(out.toFloat32Array());
  });
  const plain = gradients(unet);
  unet.zeroGrad();
  const ckOut = tidy(() => {
    const run = unet.forwardCheckpointed(x, t, cond);
    assert.equal(run.output.requiresGrad, false, "the checkpointed forward builds no graph");
    run.backward(w);
    return Array.from(run.output.toFloat32Array());
  });
  const ck = gradients(unet);
  unet.zeroGrad();
  w.dispose();
  // Per parameter, relative to its own scale. Some gradients are zero in exact arithmetic and float
  // noise (~1e-8 of the largest) in both runs — a bias right before a GroupNorm with one channel
  // per group (the tiny models' 32-channel blocks): those are compared with the largest gradient.
  let gmax = 0;
  for (const g of plain.values()) for (const v of g) gmax = Math.max(gmax, Math.abs(v));
  let worst = 0;
  let worstZero = 0;
  for (const [name, g] of plain) {
    const other = ck.get(name)!;
    let diff = 0;
    let scale = 0;
    g.forEach((v, i) => { diff = Math.max(diff, Math.abs(v - other[i]!)); scale = Math.max(scale, Math.abs(v)); });
    if (scale >= 1e-5 * gmax) worst = Math.max(worst, diff / scale);
    else worstZero = Math.max(worstZero, diff / gmax);
  }
  assert.ok(worstZero <= 1e-6, `a numerically zero gradient differs by ${worstZero} of the largest`);
  assert.ok([...plain.values()].some((g) => g.some((v) => v !== 0)), "gradients reach the parameters");
  return { output: relativeError(ckOut, plainOut), grads: worst, zeroGrads: worstZero };
}

test("checkpointed UNet backward = plain backward (tiny SDXL, full and LoRA; tiny SD1.5 at an odd size)", () => {
  const sdxlDir = referenceCase("sdxl-pipeline").pipelineFolder();
  const sd15Dir = referenceCase("sd15-pipeline").pipelineFolder();
  const sdxl = loadModelFolder(sdxlDir);
  const sd15 = loadModelFolder(sd15Dir);
  try {
    const t = tensor(new BigInt64Array([999n, 10n]), [2]);
    const xs = randn([2, 4, 8, 8], new Generator(1));
    const condXl = noGrad(() => encodePrompts(sdxl, ["a red apple", ""], { size: 64 }));
    const full = compare(sdxl.unet, xs, t, condXl);
    assert.ok(full.output <= 1e-6 && full.grads <= 2e-5, JSON.stringify(full)); // measured output 0, grads 3.8e-6
    injectLora(sdxl.unet, { rank: 2, alpha: 2, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
    // nonzero B so the adapters change the output and their A matrices get gradients
    noGrad(() => { for (const [n, p] of sdxl.unet.trainableParameters()) if (n.endsWith("lora_B.weight")) p.copy_(randn(p.shape, new Generator(3)).mul(0.1)); });
    assert.ok(sdxl.unet.trainableParameters().every(([n]) => n.includes("lora_")));
    const lora = compare(sdxl.unet, xs, t, condXl);
    assert.ok(lora.output <= 1e-6 && lora.grads <= 2e-5, JSON.stringify(lora)); // measured output 0, grads 4.8e-6
    const x15 = randn([2, 4, 9, 9], new Generator(2));
    const cond15 = noGrad(() => encodePrompts(sd15, ["a red apple", ""]));
    const odd = compare(sd15.unet, x15, t, cond15);
    assert.ok(odd.output <= 1e-6 && odd.grads <= 2e-5, JSON.stringify(odd)); // measured output 0, grads 8.4e-7
    process.stdout.write(`# checkpointing: sdxl ${JSON.stringify(full)}, sdxl lora ${JSON.stringify(lora)}, sd15 9×9 ${JSON.stringify(odd)}\n`);
  } finally {
    disposeTextToImageModel(sdxl);
    disposeTextToImageModel(sd15);
    rmSync(sdxlDir, { recursive: true, force: true });
    rmSync(sd15Dir, { recursive: true, force: true });
  }
});
