// The diffusion math shared by training, sampling and evaluation, with diffusers' semantics.
//
//   const schedule = new NoiseSchedule();                       // SD1.5: scaled_linear, ε, T = 1000
//   const { gen, noise } = seededInputs(seeds, [4, 64, 64]);    // per-seed noise, batch-independent
//   const model = classifierFreeGuidance(unetCall, textEmb, emptyEmb, 7.5);
//   const latents = sample({ sampler: "dpmpp_2m", model, schedule, steps: 25, noise, gen });
//   const edited = img2img({ sampler: "ddim", model, schedule, steps: 50, noise, gen, x0, strength: 0.6 });
//
// Training uses `addNoise(schedule, x0, noise, t)` and `trainingTarget(type, schedule, x0, noise, t)`.
export * from "./schedule.js";
export * from "./noising.js";
export * from "./samplers/types.js";
export * from "./samplers/timesteps.js";
export { samplers, getSampler, isSamplerName, SAMPLER_NAMES, SCHEDULER_CLASS_SAMPLERS, samplerForScheduler } from "./samplers/registry.js";
export { ddpm } from "./samplers/ddpm.js";
export { ddim, ddimInvert, checkEta } from "./samplers/ddim.js";
export { euler, eulerSigmas, eulerInitNoiseSigma } from "./samplers/euler.js";
export { eulerAncestral } from "./samplers/eulerAncestral.js";
export { dpmpp2m } from "./samplers/dpmpp2m.js";
export * from "./sample.js";
export * from "./guidance.js";
export { img2img, type Img2ImgOptions } from "./img2img.js";
export * from "./seeds.js";
