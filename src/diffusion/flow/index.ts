// Re-exports only: flow matching (SD3, Flux) — the FlowMatchEuler scheduler, sampling loop, training arithmetic.
export * from "./scheduler.js";
export * from "./sample.js";
export * from "./training.js";
