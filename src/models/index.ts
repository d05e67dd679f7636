// Re-exports only.
export * from "./clip/text-model.js";
