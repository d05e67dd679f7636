// The Diffusion-DPO trainer. (src/train/pretrain.ts, the plain denoising loop, is imported from
// its own path: both have a `latestCheckpoint` for their own checkpoint layouts.)
export * from "./dpo-step.js";
export * from "./trainer.js";
export * from "./checkpoint.js";
export * from "./data.js";
export * from "./events.js";
export * from "./validation.js";
export * from "./cache.js";
export * from "./run.js";
