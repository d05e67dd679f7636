// A model folder is loaded as written or the user is told what was not honoured: unknown config
// keys and unsupported scheduler settings are warnings; the scheduler class picks the sampler.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NoiseSchedule, samplerForScheduler, scheduleConfigFromDiffusers } from "../../src/diffusion/index.js";
import { schedulerConfigWarning } from "../../src/models/config-warnings.js";
import { disposeTextToImageModel, loadModelFolder } from "../../src/models/pipeline.js";
import { generate } from "../../src/sample/generate.js";
import { referenceCase } from "../_reference.js";

function emojiCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), "ddpo-warn-"));
  cpSync("models/emoji-base", dir, { recursive: true });
  return dir;
}
function editJson(path: string, f: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  f(j);
  writeFileSync(path, JSON.stringify(j, null, 2));
}

test("the shipped model and the real diffusers folders load without warnings", () => {
  const m = loadModelFolder("models/emoji-base");
  assert.deepEqual(m.loadWarnings, []);
  disposeTextToImageModel(m);
  const sd15 = loadModelFolder(referenceCase("sd15-pipeline").pipelineFolder());
  assert.deepEqual(sd15.loadWarnings, [], "diffusers' own SD1.5 folder (EulerDiscreteScheduler, its defaults)");
  disposeTextToImageModel(sd15);
  const sdxl = loadModelFolder(referenceCase("sdxl-pipeline").pipelineFolder());
  assert.deepEqual(sdxl.loadWarnings, [], "diffusers' own SDXL folder");
  disposeTextToImageModel(sdxl);
});

test("unknown keys in unet, text_encoder and vae configs are listed, naming the file", () => {
  const dir = emojiCopy();
  editJson(join(dir, "unet", "config.json"), (j) => { j.fancy_new_option = true; });
  editJson(join(dir, "text_encoder", "config.json"), (j) => { j.rope_scaling = 2; j.torch_dtype = "float32"; });
  const seen: string[] = [];
  const m = loadModelFolder(dir, { onWarning: (w) => seen.push(w) });
  assert.deepEqual(seen, m.loadWarnings);
  assert.equal(seen.length, 2, seen.join("\n"));
  assert.match(seen[0]!, /unet\/config\.json: ignored unknown key fancy_new_option/);
  assert.match(seen[1]!, /text_encoder\/config\.json: ignored unknown key rope_scaling \(/, "transformers' torch_dtype is bookkeeping, not reported");
  disposeTextToImageModel(m);
  const vae = referenceCase("sd15-pipeline").pipelineFolder();
  editJson(join(vae, "vae", "config.json"), (j) => { j.spatial_compression = 8; });
  const v = loadModelFolder(vae);
  assert.equal(v.loadWarnings!.length, 1);
  assert.match(v.loadWarnings![0]!, /vae\/config\.json: ignored unknown key spatial_compression/);
  disposeTextToImageModel(v);
});

test("the scheduler class picks the default sampler, as diffusers does", () => {
  assert.equal(samplerForScheduler("EulerDiscreteScheduler"), "euler");
  assert.equal(samplerForScheduler("EulerAncestralDiscreteScheduler"), "euler_ancestral");
  assert.equal(samplerForScheduler("DPMSolverMultistepScheduler"), "dpmpp_2m");
  assert.equal(samplerForScheduler("DDPMScheduler"), "ddpm");
  assert.equal(samplerForScheduler("DDIMScheduler"), "ddim");
  assert.equal(samplerForScheduler("PNDMScheduler"), "ddim");
  const dir = emojiCopy();
  editJson(join(dir, "scheduler", "scheduler_config.json"), (j) => { j._class_name = "EulerDiscreteScheduler"; });
  const m = loadModelFolder(dir);
  assert.equal(m.schedulerClass, "EulerDiscreteScheduler");
  const opts = { model: m, prompts: ["grinning face, face smiling, smileys & emotion"], seeds: [3], steps: 4, guidance: 1 };
  const byDefault = generate(opts)[0]!.data;
  const euler = generate({ ...opts, sampler: "euler" })[0]!.data;
  const ddim = generate({ ...opts, sampler: "ddim" })[0]!.data;
  assert.deepEqual(byDefault, euler, "an Euler folder samples with Euler by default");
  assert.notDeepEqual(byDefault, ddim);
  disposeTextToImageModel(m);
  // a class without a sampler here is said
  editJson(join(dir, "scheduler", "scheduler_config.json"), (j) => { j._class_name = "PNDMScheduler"; });
  const p = loadModelFolder(dir);
  assert.ok(p.loadWarnings!.some((w) => /PNDMScheduler has no sampler here; sampling defaults to DDIM/.test(w)), p.loadWarnings!.join("\n"));
  disposeTextToImageModel(p);
});

test("scheduler settings we do not implement warn when they differ from diffusers' defaults", () => {
  const src = "scheduler/scheduler_config.json";
  assert.equal(schedulerConfigWarning({ use_karras_sigmas: false, final_sigmas_type: "zero", timestep_type: "discrete", sigma_min: null }, src), null);
  const w = schedulerConfigWarning({ use_karras_sigmas: true, sigma_min: 0.03, interpolation_type: "log_linear", timestep_type: "continuous", final_sigmas_type: "sigma_min" }, src);
  assert.ok(w !== null);
  for (const key of ["use_karras_sigmas=true", "sigma_min=0.03", "interpolation_type=\"log_linear\"", "timestep_type=\"continuous\"", "final_sigmas_type=\"sigma_min\""]) {
    assert.ok(w.includes(key), `${key} in ${w}`);
  }
  assert.match(w, /will differ from diffusers/);
  assert.match(schedulerConfigWarning({ brand_new: 1 }, src) ?? "", /ignored unknown key brand_new/);
  const dir = emojiCopy();
  editJson(join(dir, "scheduler", "scheduler_config.json"), (j) => { j.use_karras_sigmas = true; });
  const m = loadModelFolder(dir);
  assert.ok(m.loadWarnings!.some((x) => /use_karras_sigmas=true is not supported/.test(x)), m.loadWarnings!.join("\n"));
  disposeTextToImageModel(m);
});

test("squaredcos_cap_v2 ignores beta_start/beta_end, so 0 is accepted (as diffusers folders carry)", () => {
  const cfg = scheduleConfigFromDiffusers({ beta_schedule: "squaredcos_cap_v2", beta_start: 0, beta_end: 0, num_train_timesteps: 1000 });
  const s = new NoiseSchedule(cfg);
  // Nichol & Dhariwal's cosine schedule: ᾱ_t = f(t)/f(0) with f(t) = cos²((t/T + s)/(1 + s)·π/2), β capped at 0.999
  const f = (t: number) => Math.cos(((t / 1000 + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const beta0 = Math.min(1 - f(1) / f(0), 0.999);
  assert.ok(Math.abs(s.alphasCumprod[0]! - (1 - beta0)) < 1e-9, `ᾱ_0 ${s.alphasCumprod[0]} vs ${1 - beta0}`);
  assert.throws(() => scheduleConfigFromDiffusers({ beta_schedule: "linear", beta_start: 0 }), /"betaStart" must be a number in \(0, 1\), got 0/);
});
