// Flow-DPO end to end on tiny SD3-family and Flux-family transformers: the DpoTrainer with the
// flow-matching noising hook and LoRA on the transformer blocks, on the "chosen image is brighter"
// toy pairs; held-out implicit accuracy (fresh pairs, shared σ/ε per pair) must exceed 0.75, and
// FlowMatch Euler samples of the tuned model must be brighter than the reference's, seed by seed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import { flowMatchingNoising } from "../../src/diffusion/flow/training.js";
import type { FlowMatchSchedulerConfig } from "../../src/diffusion/flow/scheduler.js";
import { SD3Transformer2DModel } from "../../src/models/sd3/transformer.js";
import { FluxTransformer2DModel } from "../../src/models/flux/transformer.js";
import {
  FluxDenoiser, SD3Denoiser, flowImplicitAccuracy, flowValidationSampler, injectFlowLora, packFlowConditioning, unpackFlowConditioning,
} from "../../src/models/flow-dpo.js";
import { setInitSeed } from "../../src/nn/index.js";
import { loadLoraStateDict } from "../../src/nn/lora.js";
import { readSafetensorsSync } from "../../src/io/safetensors.js";
import { Generator, autocast, cat, liveTensors, noGrad, randn, tensor, type Tensor } from "../../src/tensor/index.js";
import { dpoStep } from "../../src/train/dpo-step.js";
import { flowTrainingSigmas } from "../../src/diffusion/flow/scheduler.js";
import { assertNoTensorGrowth, brightPairs } from "./tiny.js";

const D = 16, POOLED = 8;
/**
 * Tuned − reference mean sample value for every seed (pixels in [−1, 1], pairs ±0.4 apart):
 * measured 0.020–0.028 (sd3) and 0.015–0.020 (flux) over seeds 11–14; bound at half the smallest.
 */
const SAMPLE_MARGIN = 0.0075;

/** Toy text encoder: [N, 2, D] states and [N, POOLED] pooled from the prompt's characters, packed. */
function encodePrompts(prompts: string[]): Tensor {
  const states = new Float32Array(prompts.length * 2 * D), pooled = new Float32Array(prompts.length * POOLED);
  prompts.forEach((p, i) => {
    for (let k = 0; k < p.length; k++) {
      const j = i * 2 * D + (k % (2 * D)), q = i * POOLED + (k % POOLED);
      states[j] = states[j]! + (p.charCodeAt(k) % 17) / 17 - 0.5;
      pooled[q] = pooled[q]! + (p.charCodeAt(k) % 11) / 11 - 0.5;
    }
  });
  return packFlowConditioning(tensor(states, [prompts.length, 2, D]), tensor(pooled, [prompts.length, POOLED]));
}

const SCHEDULER: FlowMatchSchedulerConfig = {
  numTrainTimesteps: 1000, shift: 3, useDynamicShifting: false, baseShift: 0.5, maxShift: 1.15, baseImageSeqLen: 256, maxImageSeqLen: 4096,
};

function tinySd3(): SD3Denoiser {
  setInitSeed(0);
  return new SD3Denoiser(new SD3Transformer2DModel({
    sampleSize: 8, patchSize: 2, inChannels: 3, outChannels: 3, numLayers: 2, attentionHeadDim: 8, numAttentionHeads: 2,
    jointAttentionDim: D, captionProjectionDim: D, pooledProjectionDim: POOLED, posEmbedMaxSize: 8, qkNorm: null,
  }));
}
function tinyFlux(): FluxDenoiser {
  setInitSeed(0);
  return new FluxDenoiser(new FluxTransformer2DModel({
    patchSize: 1, inChannels: 12, outChannels: 12, numLayers: 1, numSingleLayers: 1, attentionHeadDim: 8, numAttentionHeads: 2,
    jointAttentionDim: D, pooledProjectionDim: POOLED, guidanceEmbeds: true, axesDimsRope: [2, 2, 4],
  }), { guidance: 1 });
}

test("packFlowConditioning round trip", () => {
  const s = tensor(Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i), [2, 3, 4]);
  const p = tensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
  const u = unpackFlowConditioning(packFlowConditioning(s, p), 3);
  assert.deepEqual(u.states.toArray(), s.toArray());
  assert.deepEqual(u.pooled.toArray(), p.toArray());
});

for (const [name, make, lr] of [["sd3", tinySd3, 3e-3], ["flux", tinyFlux, 3e-3]] as const) {
  test(`Flow-DPO with LoRA on a tiny ${name} transformer: brighter chosen images → held-out implicit accuracy > 0.75`, async () => {
    const out = mkdtempSync(join(tmpdir(), `flow-dpo-${name}-`));
    const denoiser = make();
    const adapters = injectFlowLora(denoiser, { rank: 4 });
    const trainable = denoiser.trainableParameters().map(([n]) => n);
    assert.ok(trainable.length > 0 && trainable.every((n) => /\.lora_[AB]\.weight$/.test(n)), "only the adapters train");
    assert.ok(trainable.some((n) => n.includes("ff.net.0.proj.lora_A")) && trainable.some((n) => n.includes("attn.add_q_proj.lora_A")));
    const data = new TensorPairSource(brightPairs(16, 8, 42), 4, 1);
    const config = loadTrainConfig({
      flags: {
        seed: 1, batchSize: 4, maxSteps: 60, learningRate: lr, scaleLr: false, warmupSteps: 0, lrSchedule: "constant",
        checkpointEvery: 0, promptDropout: 0, beta: 500, finetune: "lora", outputDir: out,
      },
    });
    const noising = flowMatchingNoising(SCHEDULER);
    const live: number[] = [];
    const trainer = new DpoTrainer({ config, model: denoiser, adapters, encodePrompts, noising, data, onEvent: (e) => { if (e.type === "step") live.push(liveTensors()); } });
    const started = Date.now();
    const result = await trainer.run();
    const seconds = (Date.now() - started) / 1000;
    const first = result.history[0]!.metrics;
    assert.ok(Math.abs(first.loss - Math.LN2) < 1e-6, `step 1 at init: loss ${first.loss} = ln 2`);
    assertNoTensorGrowth(live);
    // held out: fresh images (another seed), shared σ and ε per pair, reference = adapters off
    const held = brightPairs(16, 8, 7);
    const acc = flowImplicitAccuracy({
      policy: (x, t, c) => denoiser.forward(x, t, c),
      reference: (x, t, c) => { adapters.setEnabled(false); try { return denoiser.forward(x, t, c); } finally { adapters.setEnabled(true); } },
      noising, pairs: cat([held.chosen, held.rejected], 0), cond: encodePrompts(held.prompts), gen: new Generator(123), draws: 4,
    });
    console.log(`${name} Flow-DPO: 60 steps in ${seconds.toFixed(1)} s, last loss ${result.history.at(-1)!.metrics.loss.toFixed(4)}, held-out implicit accuracy ${acc.toFixed(3)}`);
    assert.ok(acc > 0.75, `held-out implicit accuracy ${acc}`);
    // … and it samples brighter: FlowMatch Euler (8 steps, the pipeline's schedule) from the same
    // seeds and prompts, tuned vs reference (adapters off); the "latents" are the toy's pixels
    const sampleOf = flowValidationSampler({
      family: name, encodePrompts, scheduler: SCHEDULER, shape: [3, 8, 8], steps: 8, guidanceScale: 1, decode: (x) => x,
    });
    const policyFn = (x: Tensor, t: Tensor, c: Tensor) => denoiser.forward(x, t, c);
    const gains: number[] = [];
    for (const seed of [11, 12, 13, 14]) {
      const prompt = held.prompts[seed % held.prompts.length]!;
      const tuned = sampleOf(policyFn, prompt, seed);
      adapters.setEnabled(false);
      const ref = sampleOf(policyFn, prompt, seed);
      adapters.setEnabled(true);
      gains.push(tuned.mean().item() - ref.mean().item());
      tuned.dispose();
      ref.dispose();
    }
    console.log(`${name} Flow-DPO: tuned − reference sample mean per seed ${gains.map((g) => g.toFixed(3)).join(", ")}`);
    assert.ok(gains.every((g) => g > SAMPLE_MARGIN), `tuned samples brighter than the reference by > ${SAMPLE_MARGIN} for every seed: ${gains.join(", ")}`);
    // the final LoRA file has diffusers' SD3 / Flux names
    const file = readSafetensorsSync(join(result.finalPath!, "pytorch_lora_weights.safetensors"));
    const keys = [...file.tensors.keys()];
    assert.ok(keys.length === trainable.length && keys.every((k) => k.startsWith("transformer.") && /lora_[AB]\.weight$/.test(k)), keys.slice(0, 3).join(", "));
    // … and loads back into a fresh model with adapters: the same predictions
    const again = make();
    injectFlowLora(again, { rank: 4 });
    loadLoraStateDict(again, file.tensors);
    const x = held.chosen.slice(0, 0, 2), t = tensor(Float32Array.from([900, 300]), [2]), c = encodePrompts(held.prompts.slice(0, 2));
    assert.deepEqual(noGrad(() => again.forward(x, t, c)).toArray(), noGrad(() => denoiser.forward(x, t, c)).toArray());
    again.dispose();
    trainer.dispose();
    denoiser.dispose();
    data.dispose();
    rmSync(out, { recursive: true, force: true });
  });
}

test("dpoStep with the flow noising: one drawn t per pair from the training table, shared by both images; ln 2 at init", () => {
  const denoiser = tinySd3();
  const noising = flowMatchingNoising(SCHEDULER);
  const pairs = brightPairs(3, 8, 5);
  const policy = (x: Tensor, t: Tensor, c: Tensor) => denoiser.forward(x, t, c);
  const seen: number[][] = [];
  const r = dpoStep({
    policy: (x, t, c) => { seen.push(t.toArray()); return policy(x, t, c); },
    reference: (x, t, c) => policy(x, t, c),
    encodePrompts,
  }, { prompts: pairs.prompts, pixels: cat([pairs.chosen, pairs.rejected], 0) }, new Generator(3), {
    method: "dpo", beta: 500, noising, predictionType: "epsilon", promptDropout: 0, lossScale: 1,
  });
  const table = Array.from(flowTrainingSigmas(SCHEDULER).timesteps);
  assert.equal(r.timesteps.length, 3);
  assert.ok(r.timesteps.every((t) => table.includes(t)), `${r.timesteps}`);
  assert.deepEqual(seen[0], [...r.timesteps, ...r.timesteps], "the model sees t as float σ·1000, the pair's value for both images");
  assert.ok(Math.abs(r.loss - Math.LN2) < 1e-6);
  denoiser.dispose();
});

test("bf16 autocast: the tiny SD3 and Flux denoisers stay within 3e-2 of float32", () => {
  for (const make of [tinySd3, tinyFlux]) {
    const d = make();
    const x = randn([2, 3, 8, 8], new Generator(1)), t = tensor(Float32Array.from([700, 200]), [2]), c = encodePrompts(["a", "b c"]);
    const f32 = noGrad(() => d.forward(x, t, c));
    const bf16 = noGrad(() => autocast("cpu", "bf16", () => d.forward(x, t, c))).float();
    const err = f32.sub(bf16).abs().amax().item() / f32.abs().amax().item();
    // measured 9.5e-3 (sd3) / 7.4e-3 (flux): bf16 keeps 8 significant bits
    assert.ok(err < 3e-2, `${d.constructor.name} bf16 relative error ${err}`);
    console.log(`${d.constructor.name} bf16 vs f32: ${err.toExponential(2)}`);
    d.dispose();
  }
});

test("gradient checkpointing of the SD3 / Flux denoisers: same output, same parameter gradients as plain backward", () => {
  for (const make of [tinySd3, tinyFlux]) {
    const d = make();
    const x = randn([2, 3, 8, 8], new Generator(4)), t = tensor(Float32Array.from([800, 100]), [2]), c = encodePrompts(["one", "two words"]);
    const r = randn([2, 3, 8, 8], new Generator(5));
    const plainOut = d.forward(x, t, c);
    plainOut.mul(r).sum().backward();
    const plain = new Map(d.trainableParameters().map(([n, p]) => [n, p.grad!.toFloat32Array()]));
    d.zeroGrad();
    const run = d.forwardCheckpointed(x, t, c);
    assert.deepEqual(run.output.toArray(), noGrad(() => d.forward(x, t, c)).toArray());
    run.backward(r);
    let worst = 0, scale = 0;
    for (const [n, p] of d.trainableParameters()) {
      const a = p.grad!.toFloat32Array(), b = plain.get(n)!;
      for (let i = 0; i < a.length; i++) { worst = Math.max(worst, Math.abs(a[i]! - b[i]!)); scale = Math.max(scale, Math.abs(b[i]!)); }
    }
    // measured 2e-7 (sd3) / 1e-7 (flux) of the largest gradient
    assert.ok(worst / scale < 1e-5, `${d.constructor.name}: checkpointed gradients differ by ${worst / scale} of the largest`);
    console.log(`${d.constructor.name} checkpointed vs plain gradients: ${(worst / scale).toExponential(2)}`);
    d.dispose();
  }
});
