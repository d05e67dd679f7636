// SDXL end to end against diffusers 0.30 / transformers 4.44 on the tiny random
// StableDiffusionXLPipeline of ../shared/data/reference-models/sdxl-pipeline (case.json lists the
// inputs and outputs): both text encoders, the tokenizers, encode_prompt, add_time_ids, the
// text_time UNet, and the 4-step Euler run with guidance 5 through our sampler and `generate`.
// Tolerances: relative max error (max|Δ| / max|ref|); measured values in the comments (float32,
// one thread); the bounds keep ≥ 2× margin. The README's f32-vs-f64 probe: 1.6e-7 – 8.5e-7 on
// single forwards, ≤ 2.2e-6 on the sampling runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { assertClose, referenceCase } from "../_reference.js";
import {
  disposeTextToImageModel, encodePrompts, encodePromptsSdxl, isSdxlModel, loadModelFolder, saveModelFolder, unconditionalConditioning,
} from "../../src/models/pipeline.js";
import { defaultMicroConditioning, timeIdsOf, unpackConditioning, packConditioning } from "../../src/models/sdxl/conditioning.js";
import { classifierFreeGuidance, NoiseSchedule, sample } from "../../src/diffusion/index.js";
import { generate } from "../../src/sample/generate.js";
import { noGrad, tensor, tidy, type Tensor } from "../../src/tensor/index.js";

const ref = referenceCase("sdxl-pipeline");
const folder = ref.pipelineFolder();
process.on("exit", () => rmSync(folder, { recursive: true, force: true }));
const model = loadModelFolder(folder);
const values = ref.json.values as { prompt: string; height: number; guidance_scale: number; num_inference_steps: number };
const errors: Record<string, number> = {};
const close = (ours: Tensor, name: string, tol: number) => { errors[name] = assertClose(ours, ref.tensor(name), tol, name); };

test("sdxl: the folder loads as an SDXL model (two encoders, text_time UNet, force_zeros_for_empty_prompt)", () => {
  assert.equal(isSdxlModel(model), true);
  assert.equal(model.unet.config.additionEmbedType, "text_time");
  assert.equal(model.textEncoder2!.withProjection, true);
  assert.equal(model.forceZerosForEmptyPrompt, true);
  assert.equal(model.tokenizer2!.padId, 0); // "!"
  assert.equal(model.vae!.config.scalingFactor, 0.13025);
});

test("sdxl: both tokenizers give the pipeline's ids (tokenizer pads with <|endoftext|>, tokenizer_2 with '!')", () => {
  const prompts = [values.prompt, ""];
  assert.deepEqual(Array.from(model.tokenizer.encodeBatch(prompts).flat!), ref.array("input_ids"));
  assert.deepEqual(Array.from(model.tokenizer2!.encodeBatch(prompts).flat!), ref.array("input_ids_2"));
});

test("sdxl: each text encoder's penultimate states and text_encoder_2's pooled projection", () => {
  noGrad(() => tidy(() => {
    const o1 = model.textEncoder.forward(ref.tensor("input_ids"), { outputHiddenStates: true });
    close(o1.hiddenStates!.at(-2)!, "te1_penultimate_hidden_state", 1e-5); // measured 2.0e-7
    const o2 = model.textEncoder2!.forward(ref.tensor("input_ids_2"), { outputHiddenStates: true });
    close(o2.hiddenStates!.at(-2)!, "te2_penultimate_hidden_state", 1e-5); // measured 3.1e-7
    close(o2.textEmbeds!, "te2_text_embeds", 1e-5); // measured 2.7e-7
  }));
});

test("sdxl: encode_prompt (prompt, pooled, zero negatives) and add_time_ids", () => {
  noGrad(() => tidy(() => {
    const e = encodePromptsSdxl(model, [values.prompt]);
    close(e.hidden, "prompt_embeds", 1e-5); // measured 2.9e-7
    close(e.pooled, "pooled_prompt_embeds", 1e-5); // measured 2.3e-7
    const micro = defaultMicroConditioning(values.height, values.height);
    assert.deepEqual(timeIdsOf(micro), ref.array("add_time_ids")); // [64, 64, 0, 0, 64, 64]
    // the packed forms carry the same values through
    const packed = unpackConditioning(encodePrompts(model, [values.prompt], { micro }))!;
    close(packed.hidden, "prompt_embeds", 1e-5);
    close(packed.added.textEmbeds, "pooled_prompt_embeds", 1e-5);
    close(packed.added.timeIds, "add_time_ids", 0);
    const negative = unpackConditioning(unconditionalConditioning(model, 1, { micro }))!;
    close(negative.hidden, "negative_prompt_embeds", 0);
    close(negative.added.textEmbeds, "negative_pooled_prompt_embeds", 0);
    close(negative.added.timeIds, "add_time_ids", 0);
  }));
});

test("sdxl: the UNet with added_cond_kwargs, given directly and packed", () => {
  noGrad(() => tidy(() => {
    const x = ref.tensor("unet_sample");
    const t = ref.tensor("unet_timestep");
    const hidden = ref.tensor("unet_encoder_hidden_states");
    const added = { textEmbeds: ref.tensor("unet_text_embeds"), timeIds: ref.tensor("unet_time_ids") };
    close(model.unet.forward(x, t, hidden, added), "unet_out", 1e-5); // measured 1.1e-6
    const viaPacked = model.unet.forward(x, t, packConditioning(hidden, added));
    close(viaPacked, "unet_out", 1e-5);
    assert.throws(() => model.unet.forward(x, t, hidden), /addition_embed_type "text_time".*pooled text embeddings and time ids/);
  }));
});

function pipelineRun(m: typeof model): { steps: Tensor[]; final: Tensor; timesteps: number[] } {
  const micro = defaultMicroConditioning(values.height, values.height);
  const cond = encodePrompts(m, [values.prompt], { micro });
  const uncond = unconditionalConditioning(m, 1, { micro });
  const denoise = classifierFreeGuidance((x, t, c) => m.unet.forward(x, t, c), cond, uncond, values.guidance_scale);
  const steps: Tensor[] = [];
  const timesteps: number[] = [];
  const final = sample({
    sampler: "euler", model: denoise, schedule: new NoiseSchedule(m.scheduler), steps: values.num_inference_steps,
    noise: ref.tensor("latents_init"), onStep: (e) => { steps.push(e.x.clone()); timesteps.push(e.t); },
  });
  return { steps, final, timesteps };
}

test("sdxl: the 4-step Euler run, guidance 5 (timesteps, each step's latents, final latents, decoded image)", () => {
  noGrad(() => tidy(() => {
    const run = pipelineRun(model);
    assert.deepEqual(run.timesteps, ref.array("euler_timesteps"));
    const stacked = tensor(new Float32Array(run.steps.flatMap((s) => Array.from(s.toFloat32Array()))), ref.entry("euler_step_latents").shape);
    close(stacked, "euler_step_latents", 1e-4); // measured 1.5e-6
    close(run.final, "euler_final_latents", 1e-4); // measured 1.4e-6
    const image = model.vae!.decodeLatents(run.final).div(2).add(0.5).clamp(0, 1).permute([0, 2, 3, 1]).contiguous();
    close(image, "euler_image", 1e-4); // measured 1.6e-6
  }));
});

test("sdxl: generate() from the prompt string gives the pipeline's image (to the 8-bit level)", () => {
  const [img] = generate({
    model, prompts: [values.prompt], sampler: "euler", steps: values.num_inference_steps, guidance: values.guidance_scale,
    size: values.height, initialNoise: ref.tensor("latents_init"),
  });
  const want = ref.array("euler_image").map((v) => Math.round(v * 255));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(img!.data[i]! - want[i]!));
  errors.generate_8bit_levels = worst;
  // measured 1 level (a value on a rounding boundary: the float image agrees to 1.6e-6 above)
  assert.ok(worst <= 2, `largest 8-bit difference ${worst}`);
});

test("sdxl: a saved folder reloads as the same SDXL model", () => {
  const out = `${folder}-saved`;
  try {
    saveModelFolder(out, model);
    const back = loadModelFolder(out);
    try {
      assert.equal(isSdxlModel(back), true);
      assert.deepEqual(back.unet.config, model.unet.config);
      noGrad(() => tidy(() => {
        const a = pipelineRun(model).final;
        const b = pipelineRun(back).final;
        assert.deepEqual(Array.from(b.toFloat32Array()), Array.from(a.toFloat32Array())); // same weights, same code path
      }));
    } finally {
      disposeTextToImageModel(back);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("sdxl: report", () => {
  for (const [k, v] of Object.entries(errors)) process.stdout.write(`# ${k}: ${v.toExponential(2)}\n`);
});
