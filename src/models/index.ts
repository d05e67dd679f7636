// Re-exports only.
export * from "./clip/text-model.js";
export * from "./vae/autoencoder-kl.js";
export * from "./clip/tokenizer.js";
export * from "./unet/index.js";
export * from "./pipeline.js";
export * from "./sdxl/conditioning.js";
export * from "./sdxl/prompt.js";
