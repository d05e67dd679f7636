// Stable Diffusion 1.5 end to end against diffusers 0.30 / transformers 4.44 on the tiny random
// StableDiffusionPipeline of ../shared/data/reference-models/sd15-pipeline: our CLIP text encoder
// (last hidden state, pooled, penultimate) against transformers' CLIPTextModel, the UNet, and the
// 4-step Euler and DDIM runs (guidance 7.5, negative prompt "") with the decoded image.
// Relative max error (max|Δ| / max|ref|); measured values in the comments, bounds ≥ 2× above.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { assertClose, referenceCase } from "../_reference.js";
import { encodePrompts, loadModelFolder } from "../../src/models/pipeline.js";
import { classifierFreeGuidance, NoiseSchedule, sample, scheduleConfigFromDiffusers, type SamplerName } from "../../src/diffusion/index.js";
import { generate } from "../../src/sample/generate.js";
import { noGrad, tensor, tidy, type Tensor } from "../../src/tensor/index.js";

const ref = referenceCase("sd15-pipeline");
const folder = ref.pipelineFolder();
process.on("exit", () => rmSync(folder, { recursive: true, force: true }));
const model = loadModelFolder(folder);
const values = ref.json.values as { prompt: string; height: number; guidance_scale: number; num_inference_steps: number };
const errors: Record<string, number> = {};
const close = (ours: Tensor, name: string, tol: number) => { errors[name] = assertClose(ours, ref.tensor(name), tol, name); };

test("sd15: the tokenizer gives transformers' ids", () => {
  assert.deepEqual(Array.from(model.tokenizer.encodeBatch([values.prompt, ""]).flat!), ref.array("input_ids"));
});

test("sd15: CLIP text encoder = transformers' CLIPTextModel (last hidden state, pooled, penultimate) and encodePrompts", () => {
  noGrad(() => tidy(() => {
    const out = model.textEncoder.forward(ref.tensor("input_ids"), { outputHiddenStates: true });
    close(out.lastHiddenState, "te_last_hidden_state", 1e-5); // measured 3.4e-7
    close(out.pooled, "te_pooler_output", 1e-5); // measured 3.2e-7
    close(out.hiddenStates!.at(-2)!, "te_penultimate_hidden_state", 1e-5); // measured 3.0e-7
    close(encodePrompts(model, [values.prompt, ""]), "te_last_hidden_state", 1e-5);
  }));
});

test("sd15: the UNet", () => {
  noGrad(() => tidy(() => {
    const y = model.unet.forward(ref.tensor("unet_sample"), ref.tensor("unet_timestep"), ref.tensor("unet_encoder_hidden_states"));
    close(y, "unet_out", 1e-5); // measured 6.5e-7
  }));
});

function run(sampler: SamplerName, schedule: NoiseSchedule): { steps: Tensor; final: Tensor; timesteps: number[] } {
  const cond = encodePrompts(model, [values.prompt]);
  const uncond = encodePrompts(model, [""]);
  const denoise = classifierFreeGuidance((x, t, c) => model.unet.forward(x, t, c), cond, uncond, values.guidance_scale);
  const steps: number[] = [];
  const timesteps: number[] = [];
  const final = sample({
    sampler, model: denoise, schedule, steps: values.num_inference_steps, eta: 0, noise: ref.tensor("latents_init"),
    onStep: (e) => { steps.push(...e.x.toFloat32Array()); timesteps.push(e.t); },
  });
  const n = timesteps.length;
  return { steps: tensor(new Float32Array(steps), [n, ...final.shape]), final, timesteps };
}

test("sd15: 4-step Euler run (timesteps, step latents, final latents, decoded image)", () => {
  noGrad(() => tidy(() => {
    const r = run("euler", new NoiseSchedule(model.scheduler));
    assert.deepEqual(r.timesteps, ref.array("euler_timesteps"));
    close(r.steps, "euler_step_latents", 1e-4); // measured 2.0e-6
    close(r.final, "euler_final_latents", 1e-4); // measured 2.0e-6
    const image = model.vae!.decodeLatents(r.final).div(2).add(0.5).clamp(0, 1).permute([0, 2, 3, 1]).contiguous();
    close(image, "euler_image", 1e-4); // measured 2.1e-6
  }));
});

test("sd15: 4-step DDIM run (η 0, scheduler_ddim config)", () => {
  const json = JSON.parse(readFileSync(join(ref.dir, "scheduler_ddim", "scheduler_config.json"), "utf8"));
  noGrad(() => tidy(() => {
    const r = run("ddim", new NoiseSchedule(scheduleConfigFromDiffusers(json)));
    assert.deepEqual(r.timesteps, ref.array("ddim_timesteps"));
    close(r.steps, "ddim_step_latents", 1e-4); // measured 2.0e-6
    close(r.final, "ddim_final_latents", 1e-4); // measured 2.0e-6
  }));
});

test("sd15: generate() from the prompt string gives the pipeline's Euler image (to the 8-bit level)", () => {
  const [img] = generate({
    model, prompts: [values.prompt], sampler: "euler", steps: values.num_inference_steps, guidance: values.guidance_scale,
    size: values.height, initialNoise: ref.tensor("latents_init"),
  });
  const want = ref.array("euler_image").map((v) => Math.round(v * 255));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(img!.data[i]! - want[i]!));
  errors.generate_8bit_levels = worst;
  assert.ok(worst <= 2, `largest 8-bit difference ${worst}`); // measured 1 level (rounding boundary)
});

test("sd15: report", () => {
  for (const [k, v] of Object.entries(errors)) process.stdout.write(`# ${k}: ${v.toExponential(2)}\n`);
});
