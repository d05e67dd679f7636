// Re-exports only.
export * from "./clip/text-model.js";
export * from "./vae/autoencoder-kl.js";
export * from "./clip/tokenizer.js";
export * from "./clip/vision-model.js";
export * from "./clip/clip-model.js";
export * from "./clip/image-processor.js";
export * from "./clip/open-clip.js";
export * from "./clip/torch-checkpoint.js";
export * from "./unet/index.js";
export * from "./pipeline.js";
export * from "./sdxl/conditioning.js";
export * from "./sdxl/prompt.js";
