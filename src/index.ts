// diffusion-dpo's public API: the engine, diffusion math, models, training, data, feedback,
// evaluation, the web app and data-parallel training. The CLI (src/cli) is built on these.
export * from "./tensor/index.js";
export * from "./nn/index.js";
export * from "./optim/index.js";
export * from "./diffusion/index.js";
export * from "./models/index.js";
export * from "./models/flow.js";
export * from "./diffusion/flow/index.js";
export * from "./losses/index.js";
export * from "./train/index.js";
export * from "./data/index.js";
export * from "./feedback/index.js";
export * from "./eval/index.js";
export * from "./sample/index.js";
export * from "./distributed/index.js";
export * from "./server/index.js";
export * from "./demo/index.js";
export { loadTrainConfig, TrainConfigSchema, type TrainConfig } from "./config/train.js";
export * as safetensors from "./io/safetensors.js";
