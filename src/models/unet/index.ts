export * from "./config.js";
export * from "./layers.js";
export * from "./blocks.js";
export * from "./unet.js";
export * from "./checkpoint.js";
