// Starting weights from an earlier run (`train --init-from RUN`, the demo's later rounds): the
// run's final LoRA adapters, or its full UNet, loaded into a freshly built UNet before the
// trainer snapshots anything, so the reference stays the base model.
import { join } from "node:path";
import { resolveTuned } from "./models.js";
import { SafetensorsFile } from "../io/safetensors.js";
import { loadLoraStateDict } from "../nn/lora.js";
import type { Module } from "../nn/module.js";

/** Loads `spec`'s weights (a run folder, a LoRA file or a model folder) into `unet`; errors name the spec. */
export function initWeightsFrom(unet: Module, spec: string, finetune: "full" | "lora"): void {
  let found;
  try {
    found = resolveTuned(spec);
  } catch (err) {
    throw new Error(`${spec}: ${(err as Error).message}`);
  }
  if ((found.kind === "lora") !== (finetune === "lora")) {
    throw new Error(`${spec}: holds ${found.kind === "lora" ? "LoRA adapters" : "full UNet weights"}, but this run is ${finetune === "lora" ? "LoRA" : "full fine-tuning"}`);
  }
  const file = found.kind === "full" ? join(found.path, "unet", "diffusion_pytorch_model.safetensors") : found.path;
  const f = SafetensorsFile.open(file);
  const weights = f.readAll();
  try {
    if (finetune === "lora") loadLoraStateDict(unet, weights, { source: file });
    else unet.loadStateDict(weights, { source: file });
  } catch (err) {
    throw new Error(`${spec}: ${(err as Error).message}`);
  } finally {
    f.close();
    for (const t of weights.values()) t.dispose();
  }
}
