// implicitRewardAccuracy with a flow-matching noising (what eval runs for SD3 / Flux folders)
// against flowImplicitAccuracy (src/models/flow-dpo.ts, written separately for the Flow-DPO toy):
// with one draw per pair both reduce to the sign of the same margin, and they draw ε then σ from
// the generator in the same order, so the counts must agree exactly; the policy as its own
// reference gives inside = 0 everywhere (accuracy ½).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, cat, randn, tensor, type Tensor } from "../../src/tensor/index.js";
import { setInitSeed } from "../../src/nn/index.js";
import { SD3Transformer2DModel } from "../../src/models/sd3/transformer.js";
import { SD3Denoiser, flowImplicitAccuracy, flowTrainingNoising, packFlowConditioning } from "../../src/models/flow-dpo.js";
import { implicitRewardAccuracy } from "../../src/eval/implicit.js";
import type { FlowMatchSchedulerConfig } from "../../src/diffusion/flow/scheduler.js";

const SCHEDULER: FlowMatchSchedulerConfig = {
  numTrainTimesteps: 1000, shift: 3, useDynamicShifting: false, baseShift: 0.5, maxShift: 1.15, baseImageSeqLen: 256, maxImageSeqLen: 4096,
};

function tiny(seed: number): SD3Denoiser {
  setInitSeed(seed);
  return new SD3Denoiser(new SD3Transformer2DModel({
    sampleSize: 8, patchSize: 2, inChannels: 3, outChannels: 3, numLayers: 2, attentionHeadDim: 8, numAttentionHeads: 2,
    jointAttentionDim: 16, captionProjectionDim: 16, pooledProjectionDim: 8, posEmbedMaxSize: 8, qkNorm: null,
  }));
}

test("implicit accuracy with the flow noising = flowImplicitAccuracy (one draw); policy = reference → ½", async () => {
  const policy = tiny(1), reference = tiny(2);
  const n = 12;
  const g = new Generator(3);
  const pixels = randn([2 * n, 3, 8, 8], g);
  const cond = packFlowConditioning(randn([n, 2, 16], g), randn([n, 8], g));
  const prompts = Array.from({ length: n }, (_, i) => `p${i}`);
  const encodePrompts = (ps: string[]): Tensor => cond.indexSelect(0, tensor(new BigInt64Array(ps.map((p) => BigInt(prompts.indexOf(p)))), [ps.length]));
  const noising = flowTrainingNoising("sd3", SCHEDULER);
  const p = (x: Tensor, t: Tensor, c: Tensor) => policy.forward(x, t, c);
  const r = (x: Tensor, t: Tensor, c: Tensor) => reference.forward(x, t, c);
  const ours = await implicitRewardAccuracy([{ prompts, pixels }], { policy: p, reference: r, encodePrompts, noising, draws: 1, seed: 9 });
  const other = flowImplicitAccuracy({ policy: p, reference: r, noising, pairs: pixels, cond, gen: new Generator(9), draws: 1 });
  assert.equal(ours.pairs, n);
  assert.equal(ours.accuracy, other);
  assert.ok(ours.accuracy > 0 && ours.accuracy < 1, `two random models should disagree on some pairs: ${ours.accuracy}`);
  const self = await implicitRewardAccuracy([{ prompts, pixels: cat([pixels.slice(0, 0, n), pixels.slice(0, n)], 0) }], {
    policy: p, reference: p, encodePrompts, noising, draws: 2,
  });
  assert.equal(self.accuracy, 0.5);
  assert.equal(self.ties, n);
  await assert.rejects(
    implicitRewardAccuracy([{ prompts, pixels }], { policy: p, reference: r, encodePrompts }),
    /exactly one of schedule \(DDPM\) or noising/,
  );
  policy.dispose();
  reference.dispose();
});
