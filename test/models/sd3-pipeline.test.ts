// The complete StableDiffusion3Pipeline folder (reference case sd3-pipeline): token ids of the
// three tokenizers, each encoder, encode_prompt, the first transformer call and the 4-step run
// from a prompt string (latents, VAE decode, image) against diffusers v0.30.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { disposeSD3Pipeline, encodeSD3Prompt, generateSD3, loadSD3Pipeline, sd3ClipEmbeds, t5PromptEmbeds } from "../../src/models/sd3/pipeline.js";
import { cat, noGrad } from "../../src/tensor/index.js";
import { assertClose, referenceCase, relativeError } from "../_reference.js";

const ref = referenceCase("sd3-pipeline");
const values = ref.json.values as { prompts: string[]; max_sequence_length: number; prompt: string; guidance_scale: number; num_inference_steps: number; height: number; width: number };
const dir = ref.pipelineFolder();
const pipe = loadSD3Pipeline(dir);
const rows = [...values.prompts, ""];
const L = values.max_sequence_length;

test.after(() => { disposeSD3Pipeline(pipe); rmSync(dir, { recursive: true, force: true }); });

test("sd3-pipeline: the three tokenizers' ids", () => {
  assert.deepEqual(pipe.tokenizer.encodeBatch(rows, { maxLength: 77 }).ids.flat(), ref.array("input_ids"));
  assert.deepEqual(pipe.tokenizer2.encodeBatch(rows, { maxLength: 77 }).ids.flat(), ref.array("input_ids_2"));
  assert.deepEqual(pipe.tokenizer3!.encode(rows, L).ids.flat(), ref.array("input_ids_3"));
});

test("sd3-pipeline: each text encoder and encode_prompt", () => {
  noGrad(() => {
    const a = sd3ClipEmbeds(pipe.textEncoder, pipe.tokenizer, rows);
    const b = sd3ClipEmbeds(pipe.textEncoder2, pipe.tokenizer2, rows);
    const errs = [
      assertClose(a.states, ref.tensor("te1_penultimate_hidden_state"), 1e-5, "te1 h[-2]"),
      assertClose(a.pooled, ref.tensor("te1_text_embeds"), 1e-5, "te1 text_embeds"),
      assertClose(b.states, ref.tensor("te2_penultimate_hidden_state"), 1e-5, "te2 h[-2]"),
      assertClose(b.pooled, ref.tensor("te2_text_embeds"), 1e-5, "te2 text_embeds"),
      assertClose(t5PromptEmbeds(pipe.textEncoder3!, pipe.tokenizer3!, rows, L), ref.tensor("te3_last_hidden_state"), 1e-5, "te3"),
    ];
    const pos = encodeSD3Prompt(pipe, values.prompts, L);
    const neg = encodeSD3Prompt(pipe, ["", ""], L);
    errs.push(
      assertClose(pos.promptEmbeds, ref.tensor("prompt_embeds"), 1e-5, "prompt_embeds"),
      assertClose(pos.pooledPromptEmbeds, ref.tensor("pooled_prompt_embeds"), 1e-5, "pooled_prompt_embeds"),
      assertClose(neg.promptEmbeds, ref.tensor("negative_prompt_embeds"), 1e-5, "negative_prompt_embeds"),
      assertClose(neg.pooledPromptEmbeds, ref.tensor("negative_pooled_prompt_embeds"), 1e-5, "negative_pooled_prompt_embeds"),
    );
    // measured worst 3.9e-7
    console.log(`sd3-pipeline encoders / encode_prompt: worst relative error ${Math.max(...errs).toExponential(2)}`);
  });
});

test("sd3-pipeline: step-0 transformer call and the 4-step run from the prompt string (latents, decode, image)", () => {
  noGrad(() => {
    const init = ref.tensor("latents_init");
    const step0 = pipe.transformer.forward({
      hiddenStates: cat([init, init], 0),
      encoderHiddenStates: ref.tensor("step0_encoder_hidden_states"),
      pooledProjections: ref.tensor("step0_pooled_projections"),
      timestep: ref.tensor("step0_timestep"),
    });
    const e0 = assertClose(step0, ref.tensor("step0_transformer_out"), 1e-5, "step0_transformer_out");
    const steps: number[][] = [];
    const out = generateSD3(pipe, {
      prompt: values.prompt, height: values.height, width: values.width, steps: values.num_inference_steps,
      guidanceScale: values.guidance_scale, maxSequenceLength: L, latents: init,
      onStep: (_, x) => steps.push(Array.from(x.toFloat32Array())),
    });
    const refSteps = ref.array("step_latents");
    const per = refSteps.length / steps.length;
    const stepErr = Math.max(...steps.map((s, i) => relativeError(s, refSteps.slice(i * per, (i + 1) * per))));
    assert.ok(stepErr < 1e-4, `step latents ${stepErr}`);
    const e1 = assertClose(out.latents, ref.tensor("final_latents"), 1e-4, "final_latents");
    const e2 = assertClose(out.decoded, ref.tensor("vae_decoded"), 1e-4, "vae_decoded");
    const e3 = assertClose(out.image, ref.tensor("image"), 1e-4, "image");
    // measured: step0 3.3e-7, steps 4.4e-7, final 4.4e-7, decoded 1.9e-6, image 3.0e-6
    console.log(`sd3-pipeline: step0 ${e0.toExponential(2)}, steps ${stepErr.toExponential(2)}, final ${e1.toExponential(2)}, decoded ${e2.toExponential(2)}, image ${e3.toExponential(2)}`);
  });
});

test("flowValidationSampler (the trainer's validation images) through SD3Denoiser reproduces the pipeline's decoded image", async () => {
  const { SD3Denoiser, flowValidationSampler, packFlowConditioning } = await import("../../src/models/flow-dpo.js");
  const denoiser = new SD3Denoiser(pipe.transformer);
  const sampler = flowValidationSampler({
    family: "sd3", scheduler: pipe.scheduler, steps: values.num_inference_steps, guidanceScale: values.guidance_scale, shape: [16, 16, 16],
    encodePrompts: (p) => { const e = encodeSD3Prompt(pipe, p, L); return packFlowConditioning(e.promptEmbeds, e.pooledPromptEmbeds); },
    decode: (x) => pipe.vae.decodeLatents(x),
  });
  // seed 20 draws the case's latents_init (torch.randn on a CPU generator)
  const img = sampler((x, t, c) => denoiser.forward(x, t, c), values.prompt, 20);
  const want = ref.tensor("vae_decoded").clamp(-1, 1).reshape([3, values.height, values.width]);
  // measured 6.0e-6
  const err = assertClose(img, want, 1e-4, "validation image");
  console.log(`sd3 validation sampler vs diffusers decode: ${err.toExponential(2)}`);
});
