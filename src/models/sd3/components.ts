// Loading the components of a diffusers SD3 / Flux folder: CLIP text encoders (with or without
// projection), T5 encoder, the transformers' configs, the 16-channel VAE, the FlowMatch scheduler.
// Each loader checks its config before building and names the file on any mismatch.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ClipTextModel, clipTextConfigFromJson } from "../clip/text-model.js";
import { ClipTokenizer } from "../clip/tokenizer.js";
import { AutoencoderKL, autoencoderKLConfigFromJson, currentVaeWeightName } from "../vae/autoencoder-kl.js";
import { componentWeightFiles, loadWeightsInto } from "../pipeline.js";
import { readJsonObject } from "../../util/config-json.js";
import { T5EncoderModel, t5EncoderConfigFromJson } from "../t5/encoder.js";
import { T5Tokenizer } from "../t5/tokenizer.js";
import { flowMatchConfigFromJson, type FlowMatchSchedulerConfig } from "../../diffusion/flow/scheduler.js";
import type { Module } from "../../nn/module.js";

/** model_index.json of a folder, checked to be the expected pipeline class. */
export function readModelIndex(root: string, expectedClass: string): Record<string, unknown> {
  const path = join(root, "model_index.json");
  const index = readJsonObject(path, "model folder");
  if (index._class_name !== expectedClass) {
    throw new Error(`${path}: _class_name is ${JSON.stringify(index._class_name)}, expected "${expectedClass}"`);
  }
  return index;
}

/** A CLIP text encoder folder (text_encoder, text_encoder_2): CLIPTextModel or CLIPTextModelWithProjection by its config. */
export function loadClipTextEncoder(dir: string, variant?: string): ClipTextModel {
  const cfgPath = join(dir, "config.json");
  const json = readJsonObject(cfgPath, "CLIP text encoder");
  const config = clipTextConfigFromJson(json, cfgPath);
  const arch = Array.isArray(json.architectures) ? json.architectures[0] : undefined;
  const model = new ClipTextModel(config, { withProjection: arch === "CLIPTextModelWithProjection" });
  try {
    loadWeightsInto(model, componentWeightFiles(dir, "model", variant), { rename: (n) => (n === "text_model.embeddings.position_ids" ? null : n) });
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model.eval();
}

export function loadT5Encoder(dir: string, variant?: string): T5EncoderModel {
  const cfgPath = join(dir, "config.json");
  const model = new T5EncoderModel(t5EncoderConfigFromJson(readJsonObject(cfgPath, "T5 encoder"), cfgPath));
  try {
    model.loadWeights(componentWeightFiles(dir, "model", variant));
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model.eval();
}

export function loadVae(dir: string, variant?: string): AutoencoderKL {
  const cfgPath = join(dir, "config.json");
  const vae = new AutoencoderKL(autoencoderKLConfigFromJson(readJsonObject(cfgPath, "vae"), cfgPath));
  try {
    loadWeightsInto(vae, componentWeightFiles(dir, "diffusion_pytorch_model", variant), { rename: currentVaeWeightName, squeezeConv1x1: true });
  } catch (err) {
    vae.dispose();
    throw err;
  }
  return vae.eval();
}

/** Builds `make()` and loads the diffusers weights of `dir` into it (disposed on failure). */
export function loadDiffusersModule<M extends Module>(dir: string, make: () => M, variant?: string): M {
  const m = make();
  try {
    loadWeightsInto(m, componentWeightFiles(dir, "diffusion_pytorch_model", variant));
  } catch (err) {
    m.dispose();
    throw err;
  }
  return m.eval();
}

export function loadFlowScheduler(dir: string): FlowMatchSchedulerConfig {
  const path = join(dir, "scheduler_config.json");
  return flowMatchConfigFromJson(readJsonObject(path, "scheduler"), path);
}

export function loadClipTokenizer(dir: string): ClipTokenizer {
  if (!existsSync(join(dir, "vocab.json"))) {
    throw new Error(`${dir}: vocab.json is missing (a CLIP tokenizer folder needs vocab.json and merges.txt)`);
  }
  return ClipTokenizer.fromFolder(dir);
}

export function loadT5Tokenizer(dir: string): T5Tokenizer {
  return T5Tokenizer.fromFolder(dir);
}
