// Conversions between diffusers folders / our LoRA files and the formats other Stable Diffusion
// tools load: original-SD single-file checkpoints and kohya / peft / diffusers LoRA files.
export * from "./unet-names.js";
export * from "./component-names.js";
export * from "./single-file.js";
export * from "./lora-formats.js";
export * from "./presets.js";
