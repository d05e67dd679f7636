// Merging a LoRA file into a model folder: load the base (loadModelFolder), inject the file's
// adapters into the components they name (applyLoraWeights), scale them, fold them into the
// weights (mergeLora) and save a complete folder (saveModelFolder).
import { resolve } from "node:path";
import { disposeTextToImageModel, loadModelFolder, saveModelFolder } from "../pipeline.js";
import { loraLayers, mergeLora } from "../../nn/lora.js";
import type { Module } from "../../nn/module.js";
import { toDiffusersConfig } from "../unet/config.js";
import { unetLayoutFromConfig } from "./unet-names.js";
import { applyLoraWeights, assertAllMatched, LoraFormatError, readLoraFile, resolveLoraPath, type LoraFormat } from "./lora-formats.js";
import { exportSingleFileCheckpoint } from "./single-file.js";

export interface MergeOptions {
  model: string;
  lora: string;
  /** Multiplies every adapter's alpha (default 1). */
  scale?: number;
  out: string;
  /** Also write an original-SD single-file checkpoint here. */
  singleFile?: string;
  device?: string;
}

export interface MergeResult {
  out: string;
  singleFile: string | null;
  lora: string;
  format: LoraFormat;
  /** Layers merged per component. */
  merged: Record<string, number>;
}

export function mergeLoraIntoFolder(opts: MergeOptions): MergeResult {
  const scale = opts.scale ?? 1;
  const model = loadModelFolder(opts.model, { device: opts.device });
  try {
    const path = resolveLoraPath(opts.lora);
    const file = readLoraFile(path, { unetLayout: unetLayoutFromConfig(toDiffusersConfig(model.unet.config)) });
    assertAllMatched(file);
    const targets: Record<string, Module | null> = { unet: model.unet, text_encoder: model.textEncoder, text_encoder_2: model.textEncoder2 ?? null };
    const merged: Record<string, number> = {};
    for (const [component, layers] of file.weights) {
      const module = targets[component];
      if (!module) throw new LoraFormatError(`LoRA ${path} has ${component} adapters but ${opts.model} has no ${component}`);
      applyLoraWeights(module, layers, path);
      for (const [, l] of loraLayers(module)) l.alpha *= scale;
      merged[component] = mergeLora(module);
    }
    saveModelFolder(opts.out, model);
    const single = opts.singleFile ? exportSingleFileCheckpoint(opts.out, opts.singleFile).out : null;
    return { out: resolve(opts.out), singleFile: single, lora: path, format: file.format, merged };
  } finally {
    disposeTextToImageModel(model);
  }
}
