// A text-to-image model as one bundle (UNet, CLIP text encoder + tokenizer, optional VAE, noise
// schedule) and its diffusers folder layout, so Stable Diffusion folders load and what we save
// loads in diffusers:
//
//   model_index.json                     {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"], …}
//   unet/config.json                     + diffusion_pytorch_model.safetensors
//   text_encoder/config.json             + model.safetensors            (transformers' CLIPTextModel)
//   tokenizer/vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json
//   vae/config.json                      + diffusion_pytorch_model.safetensors   (AutoencoderKL)
//   scheduler/scheduler_config.json
//
// SDXL (StableDiffusionXLPipeline) folders add text_encoder_2/ (CLIPTextModelWithProjection) and
// tokenizer_2/, and model_index.json's force_zeros_for_empty_prompt; their conditioning is SDXL's
// encode_prompt (src/models/sdxl/prompt.ts), packed with the pooled embedding and time ids so the
// rest of the toolkit passes it on as one tensor (src/models/sdxl/conditioning.ts).
//
// Pixel-space models (the small default model) have no VAE: no vae/ folder, and model_index.json
// records the component as [null, null], diffusers' spelling of an absent component (as it writes
// "safety_checker": [null, null]); a bare null is accepted on load too.
//
// Weights are safetensors only (pickle .bin files would need a Python unpickler and can run code);
// sharded checkpoints (<name>.safetensors.index.json) and variants (<name>.fp16.safetensors) load.
// Loading streams one tensor at a time into the built model, after checking the file's names
// against the model's: missing or unexpected weights are an error listing them with the file.
// Saving writes a temporary sibling folder and renames it into place.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { SafetensorsFile, writeSafetensorsSync } from "../io/safetensors.js";
import { readJsonObject } from "../util/config-json.js";
import type { Module } from "../nn/module.js";
import { getDefaultDevice, noGrad, setDefaultDevice, tensor, tidy, type Tensor } from "../tensor/index.js";
import {
  SD15_SCHEDULE, scheduleConfigFromDiffusers, scheduleConfigToDiffusers, type ScheduleConfig,
} from "../diffusion/schedule.js";
import { CLIP_TEXT_CONFIG_KEYS, ClipTextModel, clipTextConfigFromJson, clipTextConfigToJson, TINY_CLIP_TEXT_CONFIG, type ClipTextConfig } from "./clip/text-model.js";
import { ClipTokenizer } from "./clip/tokenizer.js";
import { schedulerClassWarning, schedulerConfigWarning, unetConfigWarning, unknownKeysWarning, VAE_INERT_KEYS } from "./config-warnings.js";
import {
  AutoencoderKL, VAE_CONFIG_KEYS, autoencoderKLConfigFromJson, autoencoderKLConfigToJson, currentVaeWeightName, type AutoencoderKLConfig,
} from "./vae/autoencoder-kl.js";
import { UNet2DConditionModel } from "./unet/unet.js";
import { parseUNetConfig, resolveUNetConfig, toDiffusersConfig, TINY_UNET_CONFIG, type UNetConfig } from "./unet/config.js";
import { encodeSdxlPrompts, zeroSdxlPromptEmbedding, type SdxlPromptEmbedding } from "./sdxl/prompt.js";
import { defaultMicroConditioning, packConditioning, timeIdsOf, type MicroConditioning } from "./sdxl/conditioning.js";

/** The diffusers version whose folder format we write. */
export const DIFFUSERS_VERSION = "0.30.0";

export interface TextToImageModel {
  unet: UNet2DConditionModel;
  textEncoder: ClipTextModel;
  tokenizer: ClipTokenizer;
  /** null: a pixel-space model (the UNet denoises images directly). */
  vae: AutoencoderKL | null;
  scheduler: ScheduleConfig;
  /**
   * The diffusers scheduler class written to model_index.json and scheduler_config.json (default
   * "DDIMScheduler"); it also picks the default sampler (samplerForScheduler), as diffusers does.
   */
  schedulerClass?: string;
  /** SDXL: the second text encoder (CLIPTextModelWithProjection) and its tokenizer. */
  textEncoder2?: ClipTextModel;
  tokenizer2?: ClipTokenizer;
  /** SDXL's model_index.json flag: an absent negative prompt is a zero embedding (default true for SDXL). */
  forceZerosForEmptyPrompt?: boolean;
  /** What loadModelFolder ignored or could not honour in the folder's configs (shown by the CLI). */
  loadWarnings?: string[];
}

/** Whether `model` is an SDXL-style model (two text encoders, text_time UNet conditioning). */
export function isSdxlModel(model: Pick<TextToImageModel, "textEncoder2">): boolean {
  return model.textEncoder2 !== undefined;
}

export interface CreateModelOptions {
  unet?: Partial<UNetConfig>;
  textEncoder?: ClipTextConfig;
  /** An AutoencoderKL config for a latent model; null or absent: pixel space. */
  vae?: AutoencoderKLConfig | null;
  scheduler?: ScheduleConfig;
  schedulerClass?: string;
  tokenizer?: ClipTokenizer;
  /** SDXL: the second text encoder (built with its projection; the UNet needs addition_embed_type "text_time"). */
  textEncoder2?: ClipTextConfig;
  /** SDXL: its tokenizer (default: CLIP's, padding with "!" as SDXL's tokenizer_2). */
  tokenizer2?: ClipTokenizer;
}

/**
 * A freshly initialised model (default: the tiny pixel-space model — TINY_UNET_CONFIG,
 * TINY_CLIP_TEXT_CONFIG, no VAE, SD1.5's schedule, CLIP's tokenizer from assets/; with
 * `textEncoder2` an SDXL-style model).
 */
export function createTextToImageModel(opts: CreateModelOptions = {}): TextToImageModel {
  const unetConfig = resolveUNetConfig(opts.unet ?? TINY_UNET_CONFIG, "createTextToImageModel unet");
  const textConfig = opts.textEncoder ?? TINY_CLIP_TEXT_CONFIG;
  const tokenizer = opts.tokenizer ?? ClipTokenizer.fromFile();
  checkComponentConfigs(unetConfig, textConfig, opts.vae ?? null, tokenizer.vocabSize, "createTextToImageModel", opts.textEncoder2 ?? null);
  const model: TextToImageModel = {
    unet: new UNet2DConditionModel(unetConfig),
    textEncoder: new ClipTextModel(textConfig),
    tokenizer,
    vae: opts.vae ? new AutoencoderKL(opts.vae) : null,
    scheduler: opts.scheduler ?? { ...SD15_SCHEDULE },
    schedulerClass: opts.schedulerClass ?? "DDIMScheduler",
  };
  if (opts.textEncoder2 !== undefined) {
    model.textEncoder2 = new ClipTextModel(opts.textEncoder2, { withProjection: true });
    model.tokenizer2 = opts.tokenizer2 ?? ClipTokenizer.fromFile(undefined, { padToken: "!" });
    model.forceZerosForEmptyPrompt = true;
  }
  return model;
}

/**
 * The components must fit together: text width = UNet cross-attention width; VAE latent channels
 * = UNet input channels (pixel space: UNet in = out channels); the tokenizer's ids fit the
 * embedding table. Checked on configs, before any weights are built or read.
 */
export function checkComponentConfigs(
  unet: Pick<UNetConfig, "crossAttentionDim" | "inChannels" | "outChannels"> & Partial<UNetConfig>, text: ClipTextConfig,
  vae: AutoencoderKLConfig | null, tokenizerVocab: number | null, where: string, text2: ClipTextConfig | null = null,
): void {
  const textTime = unet.additionEmbedType === "text_time";
  if (textTime !== (text2 !== null)) {
    throw new Error(
      textTime
        ? `${where}: the UNet has addition_embed_type "text_time" (SDXL) but there is no text_encoder_2 for its pooled text embedding`
        : `${where}: there is a text_encoder_2 but the UNet has no addition_embed_type "text_time" to take its pooled embedding`,
    );
  }
  const cross = unet.crossAttentionDim;
  const dims = Array.isArray(cross) ? cross : [cross];
  const width = text.hiddenSize + (text2?.hiddenSize ?? 0);
  if (dims.some((x) => x !== width)) {
    const what = text2 ? `the text encoders' hidden sizes ${text.hiddenSize} + ${text2.hiddenSize} = ${width}` : `the text encoder's hidden_size ${text.hiddenSize}`;
    throw new Error(`${where}: ${what} does not match the UNet's cross_attention_dim ${JSON.stringify(cross)}`);
  }
  if (textTime && text2 !== null) {
    // SDXL base: 6 time ids (original size, crop top-left, target size)
    const want = text2.projectionDim + SDXL_TIME_IDS * unet.additionTimeEmbedDim!;
    if (unet.projectionClassEmbeddingsInputDim !== want) {
      throw new Error(
        `${where}: the UNet's projection_class_embeddings_input_dim is ${unet.projectionClassEmbeddingsInputDim}, but text_encoder_2's projection_dim ` +
          `${text2.projectionDim} + ${SDXL_TIME_IDS} time ids × addition_time_embed_dim ${unet.additionTimeEmbedDim} = ${want} ` +
          "(only SDXL base's six time ids are supported; the refiner's aesthetic score is not)",
      );
    }
  }
  if (vae) {
    if (unet.inChannels !== vae.latentChannels) {
      throw new Error(`${where}: the VAE has ${vae.latentChannels} latent channels but the UNet takes in_channels ${unet.inChannels}`);
    }
  } else if (unet.inChannels !== unet.outChannels) {
    throw new Error(`${where}: a pixel-space model (no VAE) needs the UNet's in_channels = out_channels (got ${unet.inChannels} and ${unet.outChannels})`);
  }
  if (tokenizerVocab !== null && text.vocabSize < tokenizerVocab) {
    throw new Error(`${where}: the tokenizer has ${tokenizerVocab} tokens but the text encoder's vocab_size is ${text.vocabSize}`);
  }
}

/** SDXL base's micro-conditioning: original size, crop top-left, target size. */
export const SDXL_TIME_IDS = 6;

/** checkComponentConfigs for a built model. */
export function checkCompatible(model: TextToImageModel, where: string): void {
  checkComponentConfigs(
    model.unet.config, model.textEncoder.config, model.vae?.config ?? null, model.tokenizer.vocabSize, where,
    model.textEncoder2?.config ?? null,
  );
  if (model.textEncoder2 !== undefined && model.tokenizer2 === undefined) throw new Error(`${where}: an SDXL model needs tokenizer_2 beside text_encoder_2`);
}

/** The device the text encoder's weights live on. */
function deviceOf(module: Module): string {
  const first = module.parameters()[0];
  return first ? first.device : getDefaultDevice();
}

/** The models encodePrompts reads: the text encoder(s), and for SDXL's default time ids the UNet and VAE. */
export type PromptEncoderModel = Pick<TextToImageModel, "textEncoder" | "tokenizer">
  & Partial<Pick<TextToImageModel, "textEncoder2" | "tokenizer2" | "forceZerosForEmptyPrompt" | "unet" | "vae">>;

export interface EncodePromptsOptions {
  /**
   * SDXL: the images' micro-conditioning (one for all prompts, or one per prompt). Default: the
   * pipeline's, original = target = the model's default image size, crop (0, 0).
   */
  micro?: MicroConditioning | MicroConditioning[];
  /** SDXL: the image side length the default micro-conditioning describes (pixels). */
  size?: number;
}

/** The side length (pixels) a model generates by default: the UNet's sample_size × the VAE factor. */
export function defaultModelImageSize(model: Pick<TextToImageModel, "unet" | "vae">): number {
  const s = model.unet.config.sampleSize;
  const side = s === null ? 32 : Array.isArray(s) ? s[0] : s;
  return side * (model.vae ? 2 ** (model.vae.config.blockOutChannels.length - 1) : 1);
}

function sdxlEncoders(model: PromptEncoderModel) {
  if (model.tokenizer2 === undefined) throw new Error("encodePrompts: an SDXL model (text_encoder_2) needs tokenizer_2");
  return { textEncoder: model.textEncoder, tokenizer: model.tokenizer, textEncoder2: model.textEncoder2!, tokenizer2: model.tokenizer2 };
}

function sdxlTimeIds(model: PromptEncoderModel, n: number, opts: EncodePromptsOptions, device: string): Tensor {
  let micro = opts.micro;
  if (micro === undefined) {
    if (opts.size === undefined && model.unet === undefined) throw new Error("encodePrompts: SDXL time ids need `micro`, `size` or the model's UNet for its default size");
    const size = opts.size ?? defaultModelImageSize({ unet: model.unet!, vae: model.vae ?? null });
    micro = defaultMicroConditioning(size, size);
  }
  const list = Array.isArray(micro) ? micro : Array.from({ length: n }, () => micro as MicroConditioning);
  if (list.length !== n) throw new Error(`encodePrompts: ${list.length} micro-conditionings for ${n} prompts; give one, or one per prompt`);
  const ids = list.flatMap(timeIdsOf);
  if (ids.length !== n * SDXL_TIME_IDS || !ids.every((v) => Number.isFinite(v))) throw new Error("encodePrompts: micro-conditioning sizes and crops must be finite numbers");
  return tensor(new Float32Array(ids), [n, SDXL_TIME_IDS], { device });
}

/** SDXL: prompts → `{ hidden, pooled }` (encode_prompt's prompt_embeds and pooled_prompt_embeds). */
export function encodePromptsSdxl(model: PromptEncoderModel, prompts: string[]): SdxlPromptEmbedding {
  if (!isSdxlModel(model)) throw new Error("encodePromptsSdxl: the model has no text_encoder_2 (not an SDXL model)");
  return encodeSdxlPrompts(sdxlEncoders(model), prompts);
}

/**
 * The unconditional branch of classifier-free guidance for `n` prompts when no negative prompt is
 * given: SDXL with force_zeros_for_empty_prompt → zero embeddings (time ids kept), as diffusers'
 * pipeline; otherwise the empty prompt's encoding.
 */
export function unconditionalConditioning(model: PromptEncoderModel, n: number, opts: EncodePromptsOptions = {}): Tensor {
  if (isSdxlModel(model) && (model.forceZerosForEmptyPrompt ?? true)) {
    return tidy(() => {
      const zero = zeroSdxlPromptEmbedding(sdxlEncoders(model), n);
      return packConditioning(zero.hidden, { textEmbeds: zero.pooled, timeIds: sdxlTimeIds(model, n, opts, zero.hidden.device) });
    });
  }
  return encodePrompts(model, Array.from({ length: n }, () => ""), opts);
}

/**
 * Prompts → the UNet's conditioning [N, L, D]: tokenize (padded/truncated to the text encoder's
 * max_position_embeddings, 77), then the text encoder's last hidden state, as
 * StableDiffusionPipeline.encode_prompt does without clip skip. Gradients flow when enabled.
 * SDXL (a text_encoder_2): encode_prompt's states packed with the pooled embedding and the time
 * ids of `opts` (src/models/sdxl/conditioning.ts), [N, 77 + R, D₁ + D₂].
 */
export function encodePrompts(model: PromptEncoderModel, prompts: string[], opts: EncodePromptsOptions = {}): Tensor {
  if (prompts.length === 0) throw new Error("encodePrompts: needs at least one prompt");
  if (isSdxlModel(model)) {
    return tidy(() => {
      const e = encodePromptsSdxl(model, prompts);
      return packConditioning(e.hidden, { textEmbeds: e.pooled, timeIds: sdxlTimeIds(model, prompts.length, opts, e.hidden.device) });
    });
  }
  const length = model.textEncoder.config.maxPositionEmbeddings;
  const batch = model.tokenizer.encodeBatch(prompts, { maxLength: length, padding: "max_length", truncation: true });
  return tidy(() => {
    const ids = tensor(batch.flat!, batch.shape!, { dtype: "i64", device: deviceOf(model.textEncoder) });
    return model.textEncoder.forward(ids).lastHiddenState;
  });
}

/** The empty prompt's conditioning [1, L, D] (the unconditional branch of classifier-free guidance). */
export function emptyPromptEmbedding(model: PromptEncoderModel): Tensor {
  return noGrad(() => encodePrompts(model, [""]));
}

/** Frees every component's weights. */
export function disposeTextToImageModel(model: TextToImageModel): void {
  model.unet.dispose();
  model.textEncoder.dispose();
  model.textEncoder2?.dispose();
  model.vae?.dispose();
}

// ---- loading ---------------------------------------------------------------------------------

export interface LoadModelOptions {
  /** Load "<name>.<variant>.safetensors" (e.g. "fp16") when present. */
  variant?: string;
  /** Build the modules on this device (default: the current default device). */
  device?: string;
  /** Told about config keys the loader ignores or cannot honour (also kept in the model's loadWarnings). */
  onWarning?: (message: string) => void;
}

type ComponentEntry = [string | null, string | null] | null;

function componentEntry(index: Record<string, unknown>, name: string, path: string): ComponentEntry {
  const v = index[name];
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => x === null || typeof x === "string")) {
    throw new Error(`${path}: "${name}" must be a [library, class] pair such as ["diffusers", "AutoencoderKL"], got ${JSON.stringify(v)}`);
  }
  return v[0] === null && v[1] === null ? null : [v[0] as string | null, v[1] as string | null];
}

/**
 * The safetensors files holding a component's weights: "<base>[.<variant>].safetensors", or the
 * shards listed by "<base>[.<variant>].safetensors.index.json". Only pickle files → a clear error.
 */
export function componentWeightFiles(dir: string, base: string, variant?: string): string[] {
  const stem = variant ? `${base}.${variant}` : base;
  const single = join(dir, `${stem}.safetensors`);
  if (existsSync(single)) return [single];
  const indexPath = join(dir, `${stem}.safetensors.index.json`);
  if (existsSync(indexPath)) {
    const index = readJsonObject(indexPath, "sharded checkpoint");
    const map = index.weight_map;
    if (map === null || typeof map !== "object") throw new Error(`${indexPath}: no "weight_map" object`);
    const shards = [...new Set(Object.values(map as Record<string, unknown>).map(String))];
    for (const s of shards) if (!existsSync(join(dir, s))) throw new Error(`${indexPath} lists shard ${s}, which is missing from ${dir}`);
    return shards.map((s) => join(dir, s));
  }
  const entries = existsSync(dir) ? readdirSync(dir) : [];
  const pickles = entries.filter((f) => f.endsWith(".bin") || f.endsWith(".ckpt") || f.endsWith(".pt"));
  if (pickles.length > 0) {
    throw new Error(
      `${dir} holds only PyTorch pickle weights (${pickles.join(", ")}); this toolkit reads safetensors only. ` +
        `Convert them to safetensors first (in Python: load the component and call save_pretrained(dir, safe_serialization=True)), ` +
        `which writes ${stem}.safetensors`,
    );
  }
  throw new Error(`${dir}: no weights found (expected ${stem}.safetensors or ${stem}.safetensors.index.json)`);
}

interface WeightLoadRules {
  /** Maps a file name to the model's name; null drops the tensor. */
  rename?: (name: string) => string | null;
  /** Accept [a, b, 1, 1] (1×1 conv) for a [a, b] linear weight (old VAE attention checkpoints). */
  squeezeConv1x1?: boolean;
}

function listNames(list: string[]): string {
  return list.slice(0, 20).join(", ") + (list.length > 20 ? `, … (${list.length} in all)` : "");
}

/**
 * Streams the weights in `files` into `module`: names checked first (missing / unexpected listed
 * with the files), then one tensor at a time read, shape-checked, converted to the parameter's
 * dtype and copied.
 */
export function loadWeightsInto(module: Module, files: string[], rules: WeightLoadRules = {}): void {
  const own = module.stateDict();
  const opened = files.map((f) => SafetensorsFile.open(f));
  const source = files.length === 1 ? files[0]! : `${files.length} shards in ${dirname(files[0]!)}`;
  try {
    const plan: { file: SafetensorsFile; key: string; name: string }[] = [];
    const seen = new Set<string>();
    for (const file of opened) {
      for (const key of file.keys()) {
        const name = rules.rename ? rules.rename(key) : key;
        if (name === null) continue;
        if (seen.has(name)) throw new Error(`${source}: weight "${name}" appears twice (as "${key}" and an earlier spelling)`);
        seen.add(name);
        plan.push({ file, key, name });
      }
    }
    const missing = [...own.keys()].filter((k) => !seen.has(k));
    const unexpected = plan.filter((p) => !own.has(p.name)).map((p) => p.key);
    if (missing.length > 0 || unexpected.length > 0) {
      const parts: string[] = [];
      if (missing.length > 0) parts.push(`missing weights: ${listNames(missing)}`);
      if (unexpected.length > 0) parts.push(`unexpected weights: ${listNames(unexpected)}`);
      throw new Error(`the checkpoint ${source} does not match the model (${parts.join("; ")}). Check that the config.json next to it matches the weights.`);
    }
    for (const { file, key, name } of plan) {
      const target = own.get(name)!;
      const info = file.info(key);
      let shape = info.shape;
      const squeeze = rules.squeezeConv1x1 === true && target.ndim === 2 && shape.length === 4 && shape[2] === 1 && shape[3] === 1;
      if (squeeze) shape = [shape[0]!, shape[1]!];
      if (shape.join(",") !== target.shape.join(",")) {
        throw new Error(`weight "${key}" in ${file.path} has shape [${info.shape.join(", ")}] but the model expects [${target.shape.join(", ")}]`);
      }
      tidy(() => noGrad(() => {
        const t = file.read(key);
        target.copy_(squeeze ? t.reshape(shape) : t);
      }));
    }
  } finally {
    for (const f of opened) f.close();
  }
}

/**
 * Loads a diffusers text-to-image folder (StableDiffusionPipeline layout; a missing or null "vae"
 * component means a pixel-space model).
 */
export function loadModelFolder(dir: string, opts: LoadModelOptions = {}): TextToImageModel {
  const root = resolve(dir);
  const indexPath = join(root, "model_index.json");
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new Error(`model folder ${root} does not exist`);
  const index = readJsonObject(indexPath, "model folder");
  for (const required of ["unet", "text_encoder", "tokenizer", "scheduler"]) {
    if (componentEntry(index, required, indexPath) === null) {
      throw new Error(`${indexPath}: the "${required}" component is missing; a text-to-image folder needs unet, text_encoder, tokenizer and scheduler`);
    }
  }
  const text2Entry = componentEntry(index, "text_encoder_2", indexPath);
  if (text2Entry !== null && componentEntry(index, "tokenizer_2", indexPath) === null) {
    throw new Error(`${indexPath}: "text_encoder_2" is listed but "tokenizer_2" is not; an SDXL folder needs both`);
  }
  const forceZeros = index.force_zeros_for_empty_prompt;
  if (forceZeros !== undefined && typeof forceZeros !== "boolean") {
    throw new Error(`${indexPath}: "force_zeros_for_empty_prompt" must be true or false, got ${JSON.stringify(forceZeros)}`);
  }
  const textEntry = componentEntry(index, "text_encoder", indexPath)!;
  const vaeEntry = componentEntry(index, "vae", indexPath);
  if (vaeEntry !== null && vaeEntry[1] !== "AutoencoderKL") {
    throw new Error(`${indexPath}: vae class "${String(vaeEntry[1])}" is not supported (only AutoencoderKL)`);
  }

  // Configs, tokenizer and scheduler first: a mismatch fails before any weights are built or read.
  const unetDir = join(root, "unet");
  const unetConfigPath = join(unetDir, "config.json");
  const unetJson = readJsonObject(unetConfigPath, "unet");
  const { config: unetConfig, ignoredKeys: unetIgnored } = parseUNetConfig(unetJson, unetConfigPath);
  const textDir = join(root, "text_encoder");
  const textConfigPath = join(textDir, "config.json");
  const textJson = readJsonObject(textConfigPath, "text_encoder");
  const textConfig = clipTextConfigFromJson(textJson, textConfigPath);
  const arch = Array.isArray(textJson.architectures) ? textJson.architectures[0] : undefined;
  const withProjection = textEntry[1] === "CLIPTextModelWithProjection" || arch === "CLIPTextModelWithProjection";
  const text2Dir = join(root, "text_encoder_2");
  const text2ConfigPath = join(text2Dir, "config.json");
  const text2Json = text2Entry === null ? null : readJsonObject(text2ConfigPath, "text_encoder_2");
  const text2Config = text2Json === null ? null : clipTextConfigFromJson(text2Json, text2ConfigPath);
  if (text2Entry !== null && text2Entry[1] !== "CLIPTextModelWithProjection") {
    throw new Error(`${indexPath}: text_encoder_2 class "${String(text2Entry[1])}" is not supported (SDXL's is CLIPTextModelWithProjection)`);
  }
  const vaeDir = join(root, "vae");
  const vaeConfigPath = join(vaeDir, "config.json");
  const vaeJson = vaeEntry === null ? null : readJsonObject(vaeConfigPath, "vae");
  const vaeConfig = vaeJson === null ? null : autoencoderKLConfigFromJson(vaeJson, vaeConfigPath);
  const tokenizer = ClipTokenizer.fromFolder(join(root, "tokenizer"));
  const tokenizer2 = text2Entry === null ? undefined : ClipTokenizer.fromFolder(join(root, "tokenizer_2"));
  const schedulerPath = join(root, "scheduler", "scheduler_config.json");
  const schedulerJson = readJsonObject(schedulerPath, "scheduler");
  const scheduler = scheduleConfigFromDiffusers(schedulerJson, schedulerPath);
  const schedulerEntry = componentEntry(index, "scheduler", indexPath)!;
  const schedulerClass = typeof schedulerJson._class_name === "string" ? schedulerJson._class_name : schedulerEntry[1] ?? "DDPMScheduler";
  checkComponentConfigs(unetConfig, textConfig, vaeConfig, tokenizer.vocabSize, `model folder ${root}`, text2Config);
  if (text2Config !== null && text2Config.vocabSize < tokenizer2!.vocabSize) {
    throw new Error(`model folder ${root}: tokenizer_2 has ${tokenizer2!.vocabSize} tokens but text_encoder_2's vocab_size is ${text2Config.vocabSize}`);
  }
  const unetFiles = componentWeightFiles(unetDir, "diffusion_pytorch_model", opts.variant);
  const textFiles = componentWeightFiles(textDir, "model", opts.variant);
  const text2Files = text2Config === null ? [] : componentWeightFiles(text2Dir, "model", opts.variant);
  const vaeFiles = vaeConfig === null ? [] : componentWeightFiles(vaeDir, "diffusion_pytorch_model", opts.variant);

  // every config key the loader ignores or cannot honour, from the configs read above
  const loadWarnings = [
    unetConfigWarning(unetJson, unetIgnored, unetConfigPath),
    unknownKeysWarning(textJson, CLIP_TEXT_CONFIG_KEYS, textConfigPath),
    text2Json === null ? null : unknownKeysWarning(text2Json, CLIP_TEXT_CONFIG_KEYS, text2ConfigPath),
    vaeJson === null ? null : unknownKeysWarning(vaeJson, VAE_CONFIG_KEYS, vaeConfigPath, VAE_INERT_KEYS),
    schedulerConfigWarning(schedulerJson, schedulerPath),
    schedulerClassWarning(schedulerClass, schedulerPath),
  ].filter((w): w is string => w !== null);
  for (const w of loadWarnings) opts.onWarning?.(w);

  const previousDevice = getDefaultDevice();
  if (opts.device) setDefaultDevice(opts.device);
  const built: Module[] = [];
  try {
    const unet = new UNet2DConditionModel(unetConfig);
    built.push(unet);
    loadWeightsInto(unet, unetFiles);

    const textEncoder = new ClipTextModel(textConfig, { withProjection });
    built.push(textEncoder);
    loadWeightsInto(textEncoder, textFiles, {
      // older transformers saved this buffer; transformers ignores it on load
      rename: (n) => (n === "text_model.embeddings.position_ids" ? null : n),
    });

    let textEncoder2: ClipTextModel | undefined;
    if (text2Config !== null) {
      textEncoder2 = new ClipTextModel(text2Config, { withProjection: true });
      built.push(textEncoder2);
      loadWeightsInto(textEncoder2, text2Files, { rename: (n) => (n === "text_model.embeddings.position_ids" ? null : n) });
    }

    let vae: AutoencoderKL | null = null;
    if (vaeConfig !== null) {
      vae = new AutoencoderKL(vaeConfig);
      built.push(vae);
      loadWeightsInto(vae, vaeFiles, { rename: currentVaeWeightName, squeezeConv1x1: true });
    }
    const model: TextToImageModel = { unet, textEncoder, tokenizer, vae, scheduler, schedulerClass, loadWarnings };
    if (textEncoder2 !== undefined) {
      model.textEncoder2 = textEncoder2;
      model.tokenizer2 = tokenizer2!;
      model.forceZerosForEmptyPrompt = forceZeros ?? true;
    }
    return model;
  } catch (err) {
    for (const m of built) m.dispose();
    throw err;
  } finally {
    setDefaultDevice(previousDevice);
  }
}

// ---- saving ----------------------------------------------------------------------------------

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Writes `model` as a diffusers folder at `dir`. The folder is assembled under a temporary sibling
 * and renamed into place; an existing `dir` is replaced only if it is empty or is a model folder
 * (holds model_index.json), so a wrong path never wipes unrelated files.
 */
export function saveModelFolder(dir: string, model: TextToImageModel): void {
  checkCompatible(model, "saveModelFolder");
  const target = resolve(dir);
  if (existsSync(target)) {
    if (!statSync(target).isDirectory()) throw new Error(`saveModelFolder: ${target} exists and is not a folder`);
    const entries = readdirSync(target);
    if (entries.length > 0 && !entries.includes("model_index.json")) {
      throw new Error(`saveModelFolder: ${target} is not empty and holds no model_index.json; refusing to replace it (choose an empty or new folder)`);
    }
  }
  mkdirSync(dirname(target), { recursive: true });
  const tag = `${process.pid}.${randomBytes(4).toString("hex")}`;
  const tmp = join(dirname(target), `.${basename(target)}.tmp-${tag}`);
  mkdirSync(tmp);
  try {
    writeFolderContents(tmp, model);
    if (existsSync(target)) {
      const old = join(dirname(target), `.${basename(target)}.old-${tag}`);
      renameSync(target, old);
      renameSync(tmp, target);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, target);
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

function writeFolderContents(root: string, model: TextToImageModel): void {
  const schedulerClass = model.schedulerClass ?? "DDPMScheduler";
  const withProjection = model.textEncoder.withProjection;
  const meta = { format: "pt" }; // what diffusers/transformers write; they check it on load

  const unetDir = join(root, "unet");
  mkdirSync(unetDir);
  writeJson(join(unetDir, "config.json"), { ...toDiffusersConfig(model.unet.config), _diffusers_version: DIFFUSERS_VERSION });
  writeSafetensorsSync(join(unetDir, "diffusion_pytorch_model.safetensors"), model.unet.stateDict(), meta);

  const textDir = join(root, "text_encoder");
  mkdirSync(textDir);
  writeJson(join(textDir, "config.json"), clipTextConfigToJson(model.textEncoder.config, withProjection));
  writeSafetensorsSync(join(textDir, "model.safetensors"), model.textEncoder.stateDict(), meta);

  model.tokenizer.saveFolder(join(root, "tokenizer"));

  const sdxl = model.textEncoder2 !== undefined;
  if (sdxl) {
    const text2Dir = join(root, "text_encoder_2");
    mkdirSync(text2Dir);
    writeJson(join(text2Dir, "config.json"), clipTextConfigToJson(model.textEncoder2!.config, true));
    writeSafetensorsSync(join(text2Dir, "model.safetensors"), model.textEncoder2!.stateDict(), meta);
    model.tokenizer2!.saveFolder(join(root, "tokenizer_2"));
  }

  if (model.vae) {
    const vaeDir = join(root, "vae");
    mkdirSync(vaeDir);
    writeJson(join(vaeDir, "config.json"), autoencoderKLConfigToJson(model.vae.config, DIFFUSERS_VERSION));
    writeSafetensorsSync(join(vaeDir, "diffusion_pytorch_model.safetensors"), model.vae.stateDict(), meta);
  }

  const schedDir = join(root, "scheduler");
  mkdirSync(schedDir);
  writeJson(join(schedDir, "scheduler_config.json"), {
    _class_name: schedulerClass, _diffusers_version: DIFFUSERS_VERSION, ...scheduleConfigToDiffusers(model.scheduler),
  });

  const vaeEntry = model.vae ? ["diffusers", "AutoencoderKL"] : [null, null];
  if (sdxl) {
    // StableDiffusionXLPipeline's components (no safety checker in its signature)
    writeJson(join(root, "model_index.json"), {
      _class_name: "StableDiffusionXLPipeline",
      _diffusers_version: DIFFUSERS_VERSION,
      feature_extractor: [null, null],
      force_zeros_for_empty_prompt: model.forceZerosForEmptyPrompt ?? true,
      image_encoder: [null, null],
      scheduler: ["diffusers", schedulerClass],
      text_encoder: ["transformers", withProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel"],
      text_encoder_2: ["transformers", "CLIPTextModelWithProjection"],
      tokenizer: ["transformers", "CLIPTokenizer"],
      tokenizer_2: ["transformers", "CLIPTokenizer"],
      unet: ["diffusers", "UNet2DConditionModel"],
      vae: vaeEntry,
    });
    return;
  }
  writeJson(join(root, "model_index.json"), {
    _class_name: "StableDiffusionPipeline",
    _diffusers_version: DIFFUSERS_VERSION,
    feature_extractor: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ["diffusers", schedulerClass],
    text_encoder: ["transformers", withProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    // [null, null]: no VAE, a pixel-space model (see the file comment)
    vae: vaeEntry,
  });
}
