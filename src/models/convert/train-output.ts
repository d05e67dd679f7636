// The LoRA files a training run leaves in final/ when `lora.format` asks for more than diffusers'
// pytorch_lora_weights.safetensors: that file is always written (the toolkit's eval, sample and
// merge read it), plus the requested format — peft's adapter_model.safetensors +
// adapter_config.json, or kohya's lora_kohya.safetensors with original-SD block names.
import { join } from "node:path";
import type { Module } from "../../nn/module.js";
import type { TrainConfig } from "../../config/train.js";
import type { UNetConfig } from "../unet/config.js";
import { toDiffusersConfig } from "../unet/config.js";
import { unetLayoutFromConfig } from "./unet-names.js";
import { DIFFUSERS_LORA_FILE, loraWeightsOf, writeLoraFile, type LoraWeights } from "./lora-formats.js";

export const KOHYA_LORA_FILE = "lora_kohya.safetensors";

export function saveLoraFinal(dir: string, unet: Module & { config: UNetConfig }, cfg: Pick<TrainConfig, "method" | "beta" | "lora">): string[] {
  const weights: LoraWeights = new Map([["unet", loraWeightsOf(unet)]]);
  const metadata = { method: cfg.method, beta: String(cfg.beta) };
  const unetLayout = unetLayoutFromConfig(toDiffusersConfig(unet.config));
  const files = writeLoraFile(weights, "diffusers", join(dir, DIFFUSERS_LORA_FILE), { metadata });
  if (cfg.lora.format === "peft") files.push(...writeLoraFile(weights, "peft", dir, { metadata }));
  if (cfg.lora.format === "kohya") files.push(...writeLoraFile(weights, "kohya", join(dir, KOHYA_LORA_FILE), { metadata, unetLayout }));
  return files;
}
