// The complete FluxPipeline folder (reference case flux-pipeline): token ids, both encoders,
// encode_prompt, text / image ids, the first transformer call and the 4-step run from a prompt
// string on packed latents (latents, unpacked, VAE decode, image) against diffusers v0.30.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { disposeFluxPipeline, encodeFluxPrompt, fluxLatentSize, generateFlux, loadFluxPipeline } from "../../src/models/flux/pipeline.js";
import { latentImageIds, packLatents } from "../../src/models/flux/transformer.js";
import { noGrad } from "../../src/tensor/index.js";
import { assertClose, referenceCase, relativeError } from "../_reference.js";

const ref = referenceCase("flux-pipeline");
const values = ref.json.values as { prompts: string[]; max_sequence_length: number; prompt: string; guidance_scale: number; num_inference_steps: number; height: number; width: number };
const dir = ref.pipelineFolder();
const pipe = loadFluxPipeline(dir);
const L = values.max_sequence_length;

test.after(() => { disposeFluxPipeline(pipe); rmSync(dir, { recursive: true, force: true }); });

test("flux-pipeline: token ids of both tokenizers", () => {
  assert.deepEqual(pipe.tokenizer.encodeBatch(values.prompts, { maxLength: 77 }).ids.flat(), ref.array("input_ids"));
  assert.deepEqual(pipe.tokenizer2.encode(values.prompts, L).ids.flat(), ref.array("input_ids_2"));
});

test("flux-pipeline: encode_prompt (CLIP pooled, T5 states, text ids), image ids, packing", () => {
  noGrad(() => {
    const enc = encodeFluxPrompt(pipe, values.prompts, L);
    const e = [
      assertClose(enc.pooledPromptEmbeds, ref.tensor("te1_pooler_output"), 1e-5, "te1 pooler"),
      assertClose(enc.promptEmbeds, ref.tensor("te2_last_hidden_state"), 1e-5, "te2"),
      assertClose(enc.promptEmbeds, ref.tensor("prompt_embeds"), 1e-5, "prompt_embeds"),
      assertClose(enc.pooledPromptEmbeds, ref.tensor("pooled_prompt_embeds"), 1e-5, "pooled_prompt_embeds"),
    ];
    assertClose(enc.textIds, ref.tensor("text_ids"), 0, "text_ids");
    const [h, w] = fluxLatentSize(pipe, values.height, values.width);
    assert.deepEqual([h, w], [16, 16]);
    assertClose(latentImageIds(1, h, w), ref.tensor("latent_image_ids"), 0, "latent_image_ids");
    assertClose(packLatents(ref.tensor("latents_init_unpacked")), ref.tensor("latents_init"), 0, "pack");
    // measured worst 3.1e-7
    console.log(`flux-pipeline encoders: worst relative error ${Math.max(...e).toExponential(2)}`);
  });
});

test("flux-pipeline: step-0 transformer call and the 4-step run from the prompt string", () => {
  noGrad(() => {
    const enc = encodeFluxPrompt(pipe, [values.prompt], L);
    const step0 = pipe.transformer.forward({
      hiddenStates: ref.tensor("latents_init"), encoderHiddenStates: enc.promptEmbeds, pooledProjections: enc.pooledPromptEmbeds,
      timestep: ref.tensor("step0_timestep"), imgIds: ref.tensor("latent_image_ids"), txtIds: enc.textIds,
    });
    const e0 = assertClose(step0, ref.tensor("step0_transformer_out"), 1e-5, "step0_transformer_out");
    const steps: number[][] = [];
    const out = generateFlux(pipe, {
      prompt: values.prompt, height: values.height, width: values.width, steps: values.num_inference_steps,
      guidanceScale: values.guidance_scale, maxSequenceLength: L, latents: ref.tensor("latents_init"),
      onStep: (_, x) => steps.push(Array.from(x.toFloat32Array())),
    });
    const refSteps = ref.array("step_latents");
    const per = refSteps.length / steps.length;
    const stepErr = Math.max(...steps.map((s, i) => relativeError(s, refSteps.slice(i * per, (i + 1) * per))));
    assert.ok(stepErr < 1e-4, `step latents ${stepErr}`);
    const e1 = assertClose(out.latents, ref.tensor("final_latents"), 1e-4, "final_latents");
    const e2 = assertClose(out.unpacked, ref.tensor("final_latents_unpacked"), 1e-4, "final_latents_unpacked");
    const e3 = assertClose(out.decoded, ref.tensor("vae_decoded"), 1e-4, "vae_decoded");
    const e4 = assertClose(out.image, ref.tensor("image"), 1e-4, "image");
    // measured: step0 2.4e-7, steps 1.4e-7, final 1.2e-7, decoded 9.7e-7, image 9.5e-7
    console.log(`flux-pipeline: step0 ${e0.toExponential(2)}, steps ${stepErr.toExponential(2)}, final ${e1.toExponential(2)}, unpacked ${e2.toExponential(2)}, decoded ${e3.toExponential(2)}, image ${e4.toExponential(2)}`);
  });
});

test("flowValidationSampler through FluxDenoiser (unpacked latents, packing inside) reproduces the pipeline's decoded image", async () => {
  const { FluxDenoiser, flowValidationSampler, packFlowConditioning } = await import("../../src/models/flow-dpo.js");
  const denoiser = new FluxDenoiser(pipe.transformer);
  const sampler = flowValidationSampler({
    family: "flux", scheduler: pipe.scheduler, steps: values.num_inference_steps, guidanceScale: values.guidance_scale, shape: [16, 16, 16],
    encodePrompts: (p) => { const e = encodeFluxPrompt(pipe, p, L); return packFlowConditioning(e.promptEmbeds, e.pooledPromptEmbeds); },
    decode: (x) => pipe.vae.decodeLatents(x),
  });
  const img = sampler((x, t, c) => denoiser.forward(x, t, c), values.prompt, 20);
  const want = ref.tensor("vae_decoded").clamp(-1, 1).reshape([3, values.height, values.width]);
  // measured 1.9e-6
  const err = assertClose(img, want, 1e-4, "validation image");
  console.log(`flux validation sampler vs diffusers decode: ${err.toExponential(2)}`);
});
