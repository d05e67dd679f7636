// SD3Transformer2DModel against the reference case sd3-transformer (diffusers 0.30, float32).
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { SD3Transformer2DModel, sd3TransformerConfigFromJson, sincosPosEmbed2d } from "../../src/models/sd3/transformer.js";
import { readJsonObject } from "../../src/util/config-json.js";
import { loadWeightsInto } from "../../src/models/pipeline.js";
import { noGrad, tensor } from "../../src/tensor/index.js";
import { assertClose, referenceCase, relativeError } from "../_reference.js";

const ref = referenceCase("sd3-transformer");

export function loadSd3Transformer(dir: string): SD3Transformer2DModel {
  const cfgPath = join(dir, "config.json");
  const model = new SD3Transformer2DModel(sd3TransformerConfigFromJson(readJsonObject(cfgPath, "transformer"), cfgPath));
  loadWeightsInto(model, [join(dir, "diffusion_pytorch_model.safetensors")]);
  return model.eval();
}

test("sd3-transformer: forward equals diffusers", () => {
  const model = loadSd3Transformer(join(ref.dir, "transformer"));
  noGrad(() => {
    const out = model.forward({
      hiddenStates: ref.tensor("hidden_states"),
      encoderHiddenStates: ref.tensor("encoder_hidden_states"),
      pooledProjections: ref.tensor("pooled_projections"),
      timestep: ref.tensor("timestep"),
    });
    // measured 1.8e-7
    const err = assertClose(out, ref.tensor("transformer_out"), 1e-5, "transformer_out");
    console.log(`sd3 transformer_out relative error ${err.toExponential(2)}`);
  });
  model.dispose();
});

test("sd3 PatchEmbed: our sin-cos table equals the stored pos_embed buffer", () => {
  const model = loadSd3Transformer(join(ref.dir, "transformer"));
  const c = model.config;
  const ours = sincosPosEmbed2d(c.numAttentionHeads * c.attentionHeadDim, c.posEmbedMaxSize, c.sampleSize / c.patchSize);
  const err = relativeError(ours, model.pos_embed.pos_embed.toFloat32Array());
  // measured 0 – 1e-7 (float64 numpy table cast to float32 vs Math.sin / cos in doubles)
  assert.ok(err < 1e-6, `pos_embed relative error ${err}`);
  assert.throws(() => model.forward({
    hiddenStates: tensor(new Float32Array(4 * 200 * 200), [1, 4, 200, 200]),
    encoderHiddenStates: tensor(new Float32Array(32), [1, 1, 32]),
    pooledProjections: tensor(new Float32Array(64), [1, 64]),
    timestep: tensor(new Float32Array([1]), [1]),
  }), /pos_embed_max_size 96/);
  model.dispose();
});

test("sd3-transformer: the 4-step StableDiffusion3Pipeline run from given embeddings (guidance 7)", async () => {
  const { flowMatchConfigFromJson, flowSetTimesteps } = await import("../../src/diffusion/flow/scheduler.js");
  const { flowSample } = await import("../../src/diffusion/flow/sample.js");
  const { cat, full } = await import("../../src/tensor/index.js");
  const model = loadSd3Transformer(join(ref.dir, "transformer"));
  const cfgPath = join(ref.dir, "scheduler", "scheduler_config.json");
  const schedule = flowSetTimesteps(flowMatchConfigFromJson(readJsonObject(cfgPath, "scheduler"), cfgPath), 4);
  const states = cat([ref.tensor("pipe_negative_prompt_embeds"), ref.tensor("pipe_prompt_embeds")], 0);
  const pooled = cat([ref.tensor("pipe_negative_pooled_prompt_embeds"), ref.tensor("pipe_pooled_prompt_embeds")], 0);
  const steps: number[][] = [];
  const final = flowSample({
    latents: ref.tensor("pipe_latents_init"),
    schedule,
    guidanceScale: 7,
    velocity: (x, t) => model.forward({ hiddenStates: x, encoderHiddenStates: states, pooledProjections: pooled, timestep: full([x.shape[0]!], t) }),
    onStep: (_, x) => steps.push(Array.from(x.toFloat32Array())),
  });
  // measured: final 6.8e-7, worst step 6.8e-7
  const err = assertClose(final, ref.tensor("pipe_final_latents"), 1e-4, "pipe_final_latents");
  const refSteps = ref.array("pipe_step_latents");
  const per = refSteps.length / 4;
  const stepErr = Math.max(...steps.map((s, i) => relativeError(s, refSteps.slice(i * per, (i + 1) * per))));
  assert.ok(stepErr < 1e-4, `step latents ${stepErr}`);
  console.log(`sd3 4-step run: final ${err.toExponential(2)}, worst step ${stepErr.toExponential(2)}`);
  model.dispose();
});

test("SD3.5-medium dual attention (MMDiT-X): diffusers' names; with attn2's modulation rows zero it equals the plain block", async () => {
  const { readSafetensorsSync } = await import("../../src/io/safetensors.js");
  const { randn, Generator, zeros, cat: catT } = await import("../../src/tensor/index.js");
  const cfgPath = join(ref.dir, "transformer", "config.json");
  const json = readJsonObject(cfgPath, "transformer");
  const dual = new SD3Transformer2DModel(sd3TransformerConfigFromJson({ ...json, dual_attention_layers: [0], qk_norm: "rms_norm" }, cfgPath));
  const names = new Map(dual.namedParameters().map(([n, p]) => [n, p.shape]));
  const d = 32;
  assert.deepEqual(names.get("transformer_blocks.0.norm1.linear.weight"), [9 * d, d]);
  assert.deepEqual(names.get("transformer_blocks.1.norm1.linear.weight"), [6 * d, d]);
  for (const n of ["to_q", "to_k", "to_v", "to_out.0"]) assert.deepEqual(names.get(`transformer_blocks.0.attn2.${n}.weight`), [d, d]);
  assert.deepEqual(names.get("transformer_blocks.0.attn2.norm_q.weight"), [8]);
  assert.equal(names.has("transformer_blocks.1.attn2.to_q.weight"), false);
  dual.dispose();

  // the v0.30 weights + attn2 (random) + 3 zero chunks of block 0's modulation: gate_msa2 = 0
  const state = readSafetensorsSync(join(ref.dir, "transformer", "diffusion_pytorch_model.safetensors")).tensors;
  const model = new SD3Transformer2DModel(sd3TransformerConfigFromJson({ ...json, dual_attention_layers: [0] }, cfgPath));
  const full = new Map(state);
  full.set("transformer_blocks.0.norm1.linear.weight", catT([state.get("transformer_blocks.0.norm1.linear.weight")!, zeros([3 * d, d])], 0));
  full.set("transformer_blocks.0.norm1.linear.bias", catT([state.get("transformer_blocks.0.norm1.linear.bias")!, zeros([3 * d])], 0));
  let k = 0;
  for (const [name, p] of model.namedParameters()) if (name.includes(".attn2.")) full.set(name, randn(p.shape, new Generator(900 + k++)).mul(0.2));
  model.loadStateDict(full);
  noGrad(() => {
    const out = model.forward({
      hiddenStates: ref.tensor("hidden_states"), encoderHiddenStates: ref.tensor("encoder_hidden_states"),
      pooledProjections: ref.tensor("pooled_projections"), timestep: ref.tensor("timestep"),
    });
    // measured 1.8e-7 (the same as the plain model: the zero gate removes attn2 exactly)
    assertClose(out, ref.tensor("transformer_out"), 1e-5, "dual attention with a zero gate");
    // a non-zero gate_msa2 (the 9th chunk's bias) makes attn2 count
    const bias = full.get("transformer_blocks.0.norm1.linear.bias")!;
    model.loadStateDict(new Map([...full, ["transformer_blocks.0.norm1.linear.bias", catT([bias.slice(0, 0, 8 * d), zeros([d]).add(0.5)], 0)]]));
    const gated = model.forward({
      hiddenStates: ref.tensor("hidden_states"), encoderHiddenStates: ref.tensor("encoder_hidden_states"),
      pooledProjections: ref.tensor("pooled_projections"), timestep: ref.tensor("timestep"),
    });
    const moved = relativeError(Array.from(gated.toFloat32Array()), ref.array("transformer_out"));
    assert.ok(moved > 1e-2, `attn2 with gate 0.5 changes the output (relative ${moved})`);
  });
  model.dispose();
});
