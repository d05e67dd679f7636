// Re-exports only.
export * from "./clip/text-model.js";
export * from "./vae/autoencoder-kl.js";
