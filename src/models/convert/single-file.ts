// Single-file Stable Diffusion checkpoints (the `.safetensors` AUTOMATIC1111 / Forge, ComfyUI and
// InvokeAI load from their checkpoint folders) ↔ diffusers model folders.
//
//   model.diffusion_model.…                  UNet, original / SGM block names (unet-names.ts)
//   first_stage_model.…                      VAE (component-names.ts)
//   cond_stage_model.transformer.…           SD1.x text encoder (transformers' CLIP names)
//   cond_stage_model.model.…                 SD2.x text encoder (open_clip names)
//   conditioner.embedders.0.transformer.…    SDXL's first text encoder (transformers' CLIP names)
//   conditioner.embedders.1.model.…          SDXL's second text encoder (open_clip names)
//   v_pred (empty tensor)                    a v-prediction model (ComfyUI reads this marker;
//   ztsnr  (empty tensor)                    zero terminal SNR); written from scheduler_config.json
//
// Export works on the stored tensors (a rename, 1×1-conv reshape, q/k/v stacking, projection
// transpose: component-names.ts), never through model classes, so any dtype converts exactly and
// the SDXL layout works without an SDXL model class. A single file carries no configs, tokenizer or
// scheduler: import takes them from a reference diffusers folder of the same architecture
// (`configFrom`, e.g. the base model the checkpoint was tuned from) and checks every tensor's name
// and shape against that folder's weights. Keys a single file may carry that a diffusers folder
// has no place for (EMA copies, the training schedule's buffers, open_clip's logit_scale, SD2's
// unused last text layer) are skipped and reported; any other unknown key is an error.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { SafetensorsFile, writeSafetensorsSync, type RawTensor, type SafetensorsDtype } from "../../io/safetensors.js";
import { fromBytes, toBytes, type DType } from "../../tensor/index.js";
import { tidy } from "../../tensor/tensor.js";
import { componentWeightFiles, DIFFUSERS_VERSION } from "../pipeline.js";
import { AutoencoderKL, autoencoderKLConfigToJson, currentVaeWeightName, SD_AUTOENCODER_KL_CONFIG } from "../vae/autoencoder-kl.js";
import { ClipTextModel, clipTextConfigToJson, DEFAULT_CLIP_TEXT_CONFIG, type ClipTextConfig } from "../clip/text-model.js";
import { ClipTokenizer } from "../clip/tokenizer.js";
import { describeParameters } from "../unet/unet.js";
import { SD15_UNET_CONFIG, toDiffusersConfig } from "../unet/config.js";
import { SD15_SCHEDULE, scheduleConfigToDiffusers } from "../../diffusion/schedule.js";
import { getInitGenerator } from "../../nn/init.js";
import type { Module } from "../../nn/module.js";
import { getDefaultDevice, setDefaultDevice } from "../../tensor/index.js";
import { unetLayoutFromConfig, unetNameTable } from "./unet-names.js";
import { clipToOpenClip, isVaeConvAttention, openClipToClip, rawReshape, vaeToDiffusers, vaeToOriginal, vaeUpBlockCount } from "./component-names.js";

export type SdFamily = "sd1" | "sd2" | "sdxl";
export const SD_FAMILIES: readonly SdFamily[] = ["sd1", "sd2", "sdxl"];

export const UNET_PREFIX = "model.diffusion_model.";
export const VAE_PREFIX = "first_stage_model.";

type Encoding = "clip" | "open_clip";
interface TextSlot { component: "text_encoder" | "text_encoder_2"; prefix: string; encoding: Encoding }

/** Where each family's text encoders live in a single file, and in which naming. */
export const TEXT_SLOTS: Record<SdFamily, TextSlot[]> = {
  sd1: [{ component: "text_encoder", prefix: "cond_stage_model.transformer.", encoding: "clip" }],
  sd2: [{ component: "text_encoder", prefix: "cond_stage_model.model.", encoding: "open_clip" }],
  sdxl: [
    { component: "text_encoder", prefix: "conditioner.embedders.0.transformer.", encoding: "clip" },
    { component: "text_encoder_2", prefix: "conditioner.embedders.1.model.", encoding: "open_clip" },
  ],
};

export class CheckpointError extends Error {
  override readonly name = "CheckpointError";
}

function readJson(path: string): Record<string, unknown> {
  if (!existsSync(path)) throw new CheckpointError(`${path} is missing`);
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new CheckpointError(`${path} is not valid JSON (${(err as Error).message})`);
  }
}

function present(index: Record<string, unknown>, name: string): boolean {
  const v = index[name];
  return Array.isArray(v) && v.some((x) => x !== null);
}

/** Which family a diffusers folder is: a second text encoder → sdxl; an OpenCLIP (gelu) text encoder → sd2; else sd1. */
export function detectFolderFamily(folder: string): SdFamily {
  const index = readJson(join(folder, "model_index.json"));
  if (present(index, "text_encoder_2")) return "sdxl";
  const text = readJson(join(folder, "text_encoder", "config.json"));
  return text.hidden_act === "gelu" ? "sd2" : "sd1";
}

/** Which family a single file is, from its key prefixes; null when it has no known text-encoder prefix. */
export function detectFileFamily(keys: Iterable<string>): SdFamily | null {
  let sd1 = false;
  let sd2 = false;
  for (const k of keys) {
    if (k.startsWith("conditioner.embedders.")) return "sdxl";
    if (k.startsWith("cond_stage_model.model.")) sd2 = true;
    if (k.startsWith("cond_stage_model.transformer.")) sd1 = true;
  }
  return sd2 ? "sd2" : sd1 ? "sd1" : null;
}

interface OpenComponent { files: SafetensorsFile[]; names: string[]; fileOf: Map<string, SafetensorsFile> }

function openComponent(dir: string, base: string): OpenComponent {
  const files = componentWeightFiles(dir, base).map((f) => SafetensorsFile.open(f));
  const fileOf = new Map<string, SafetensorsFile>();
  for (const f of files) for (const k of f.keys()) fileOf.set(k, f);
  return { files, names: [...fileOf.keys()], fileOf };
}

const FLOAT_DTYPES = new Set<SafetensorsDtype>(["F16", "BF16", "F32", "F64"]);
const OUT_DTYPE: Record<"f16" | "bf16" | "f32", SafetensorsDtype> = { f16: "F16", bf16: "BF16", f32: "F32" };
const LOAD_AS: Partial<Record<SafetensorsDtype, DType>> = { F16: "f16", BF16: "bf16", F32: "f32", F64: "f64" };

function castRaw(t: RawTensor, to: "keep" | "f16" | "bf16" | "f32"): RawTensor {
  if (to === "keep" || !FLOAT_DTYPES.has(t.dtype) || t.dtype === OUT_DTYPE[to]) return t;
  const bytes = tidy(() => toBytes(fromBytes(t.bytes, t.shape, LOAD_AS[t.dtype]!).to(to)));
  return { dtype: OUT_DTYPE[to], shape: t.shape, bytes };
}

export interface ExportCheckpointOptions {
  /** Default: detected from the folder (detectFolderFamily). */
  family?: SdFamily;
  /** Floating-point tensors converted to this dtype; "keep" (default) copies them as stored. */
  dtype?: "keep" | "f16" | "bf16" | "f32";
}

export interface ExportCheckpointResult {
  family: SdFamily;
  out: string;
  /** Tensors written per component (markers excluded). */
  counts: Record<string, number>;
  predictionType: string;
  markers: string[];
}

/** Writes a diffusers folder (with a VAE) as one original-layout safetensors file. */
export function exportSingleFileCheckpoint(folder: string, out: string, opts: ExportCheckpointOptions = {}): ExportCheckpointResult {
  const root = resolve(folder);
  const index = readJson(join(root, "model_index.json"));
  if (!present(index, "vae")) {
    throw new CheckpointError(`${root} has no VAE (a pixel-space model); single-file Stable Diffusion checkpoints hold a VAE (first_stage_model), so this model cannot be exported as one`);
  }
  const family = opts.family ?? detectFolderFamily(root);
  const dtype = opts.dtype ?? "keep";
  const tensors = new Map<string, RawTensor>();
  const counts: Record<string, number> = {};
  const opened: SafetensorsFile[] = [];
  const put = (name: string, t: RawTensor) => {
    if (tensors.has(name)) throw new CheckpointError(`${root}: two tensors map to "${name}"`);
    tensors.set(name, castRaw(t, dtype));
  };
  try {
    // UNet
    const unet = openComponent(join(root, "unet"), "diffusion_pytorch_model");
    opened.push(...unet.files);
    const layout = unetLayoutFromConfig(readJson(join(root, "unet", "config.json")), join(root, "unet", "config.json"));
    const table = unetNameTable(layout, unet.names, `${root}/unet`);
    for (const name of unet.names) put(UNET_PREFIX + table.toOriginal.get(name)!, unet.fileOf.get(name)!.readRaw(name));
    counts.unet = unet.names.length;

    // VAE (legacy attention names normalised first; attention projections become 1×1 convs)
    const vae = openComponent(join(root, "vae"), "diffusion_pytorch_model");
    opened.push(...vae.files);
    const current = vae.names.map((n) => currentVaeWeightName(n));
    const ups = vaeUpBlockCount(current);
    const badVae: string[] = [];
    vae.names.forEach((name, i) => {
      const original = vaeToOriginal(current[i]!, ups);
      if (original === null) {
        badVae.push(name);
        return;
      }
      let t = vae.fileOf.get(name)!.readRaw(name);
      if (isVaeConvAttention(original) && t.shape.length === 2) t = rawReshape(t, [...t.shape, 1, 1]);
      put(VAE_PREFIX + original, t);
    });
    if (badVae.length > 0) throw new CheckpointError(`${root}/vae: weights with no original-SD spelling: ${badVae.slice(0, 12).join(", ")}`);
    counts.vae = vae.names.length;

    // text encoders
    for (const slot of TEXT_SLOTS[family]) {
      const dir = join(root, slot.component);
      if (!existsSync(dir)) throw new CheckpointError(`${root}: family ${family} needs a ${slot.component}/ folder`);
      const te = openComponent(dir, "model");
      opened.push(...te.files);
      const names = te.names.filter((n) => !n.endsWith(".position_ids"));
      const read = (n: string) => te.fileOf.get(n)!.readRaw(n);
      if (slot.encoding === "clip") {
        for (const n of names) put(slot.prefix + n, read(n));
      } else {
        const { tensors: oc, unmapped } = clipToOpenClip(names, read);
        if (unmapped.length > 0) throw new CheckpointError(`${dir}: weights with no open_clip spelling: ${unmapped.slice(0, 12).join(", ")}`);
        for (const [n, t] of oc) put(slot.prefix + n, t);
      }
      counts[slot.component] = names.length;
    }
  } finally {
    for (const f of opened) f.close();
  }
  const schedulerPath = join(root, "scheduler", "scheduler_config.json");
  const scheduler = existsSync(schedulerPath) ? readJson(schedulerPath) : {};
  const predictionType = typeof scheduler.prediction_type === "string" ? scheduler.prediction_type : "epsilon";
  const markers: string[] = [];
  const empty: RawTensor = { dtype: "F32", shape: [0], bytes: new Uint8Array(0) };
  if (predictionType === "v_prediction") markers.push("v_pred");
  if (scheduler.rescale_betas_zero_snr === true) markers.push("ztsnr");
  for (const m of markers) tensors.set(m, empty);
  mkdirSync(dirname(resolve(out)), { recursive: true });
  writeSafetensorsSync(out, tensors, { format: "pt" });
  return { family, out: resolve(out), counts, predictionType, markers };
}

// ---- import ---------------------------------------------------------------------------------------

/** Keys of original checkpoints that have no place in a diffusers folder, with why they are skipped. */
function skippedReason(key: string): string | null {
  if (key.startsWith("model_ema.")) return "EMA copy of the UNet (the file's model.diffusion_model weights are used)";
  if (/^(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|posterior_variance|posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2|logvar|lvlb_weights)$/.test(key)) {
    return "training schedule buffer (the scheduler config comes from the reference folder)";
  }
  if (key.endsWith(".position_ids")) return "position-id buffer (transformers rebuilds it)";
  if (/^(cond_stage_model|conditioner\.embedders\.\d+)\.model\.(logit_scale|attn_mask)$/.test(key)) return "open_clip-only tensor (unused by the text encoder)";
  return null;
}

export interface ImportCheckpointOptions {
  /**
   * A diffusers folder of the same architecture: configs, tokenizers and scheduler are copied from
   * it. Absent: SD1.5's public configs (sd1 files only; see writeSd15Configs).
   */
  configFrom?: string;
  family?: SdFamily;
}

/** SD1.x's text encoder: CLIP ViT-L/14's text tower, as runwayml/stable-diffusion-v1-5's text_encoder/config.json. */
export const SD15_TEXT_ENCODER_CONFIG: ClipTextConfig = {
  ...DEFAULT_CLIP_TEXT_CONFIG, hiddenSize: 768, intermediateSize: 3072, numHiddenLayers: 12, numAttentionHeads: 12,
  projectionDim: 768, bosTokenId: 0, eosTokenId: 2, padTokenId: 1,
};

function metaShapes(build: () => Module): Map<string, number[]> {
  const previous = getDefaultDevice();
  const rng = getInitGenerator().getState();
  setDefaultDevice("meta");
  try {
    const m = build();
    const out = new Map([...m.stateDict()].filter(([k]) => !k.endsWith(".position_ids")).map(([k, t]) => [k, [...t.shape]] as [string, number[]]));
    m.dispose();
    return out;
  } finally {
    setDefaultDevice(previous);
    getInitGenerator().setState(rng);
  }
}

/**
 * Writes SD1.5's configs (UNet, CLIP ViT-L text encoder, VAE, PNDM scheduler with SD's
 * scaled-linear betas, model_index.json) and the bundled CLIP tokenizer into `dir`, and returns
 * every component's weight names and shapes (from the meta device: nothing is allocated).
 */
export function writeSd15Configs(dir: string): Record<string, Map<string, number[]>> {
  const write = (rel: string, v: unknown) => {
    mkdirSync(dirname(join(dir, rel)), { recursive: true });
    writeFileSync(join(dir, rel), `${JSON.stringify(v, null, 2)}\n`);
  };
  write("unet/config.json", { _class_name: "UNet2DConditionModel", _diffusers_version: DIFFUSERS_VERSION, ...toDiffusersConfig(SD15_UNET_CONFIG) });
  write("text_encoder/config.json", clipTextConfigToJson(SD15_TEXT_ENCODER_CONFIG, false));
  write("vae/config.json", autoencoderKLConfigToJson(SD_AUTOENCODER_KL_CONFIG, DIFFUSERS_VERSION));
  write("scheduler/scheduler_config.json", { _class_name: "PNDMScheduler", _diffusers_version: DIFFUSERS_VERSION, ...scheduleConfigToDiffusers(SD15_SCHEDULE), skip_prk_steps: true });
  ClipTokenizer.fromFile().saveFolder(join(dir, "tokenizer"));
  write("model_index.json", {
    _class_name: "StableDiffusionPipeline", _diffusers_version: DIFFUSERS_VERSION, feature_extractor: [null, null],
    requires_safety_checker: false, safety_checker: [null, null], scheduler: ["diffusers", "PNDMScheduler"],
    text_encoder: ["transformers", "CLIPTextModel"], tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"], vae: ["diffusers", "AutoencoderKL"],
  });
  return {
    unet: new Map(describeParameters(SD15_UNET_CONFIG).map((p) => [p.name, p.shape])),
    vae: metaShapes(() => new AutoencoderKL(SD_AUTOENCODER_KL_CONFIG)),
    text_encoder: metaShapes(() => new ClipTextModel(SD15_TEXT_ENCODER_CONFIG)),
  };
}

export interface ImportCheckpointResult {
  family: SdFamily;
  out: string;
  counts: Record<string, number>;
  /** Keys not carried over, each with the reason. */
  skipped: { key: string; reason: string }[];
  predictionType: string | null;
}

interface Expected { dir: string; fileName: string; shapes: Map<string, number[]> }

function expectedComponent(refRoot: string, component: string, base: string): Expected {
  const dir = join(refRoot, component);
  const comp = openComponent(dir, base);
  try {
    const shapes = new Map<string, number[]>();
    for (const n of comp.names) if (!n.endsWith(".position_ids")) shapes.set(n, comp.fileOf.get(n)!.info(n).shape);
    return { dir: component, fileName: `${base}.safetensors`, shapes };
  } finally {
    for (const f of comp.files) f.close();
  }
}

const WEIGHT_FILE = /\.(safetensors|bin|ckpt|pt|pth|msgpack|onnx)$|\.safetensors\.index\.json$|\.bin\.index\.json$/;

function copyConfigs(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const entry of readdirSync(from)) {
    const src = join(from, entry);
    if (statSync(src).isDirectory()) copyConfigs(src, join(to, entry));
    else if (!WEIGHT_FILE.test(entry)) copyFileSync(src, join(to, entry));
  }
}

function sameUpTo1x1(a: number[], b: number[]): boolean {
  const strip = (s: number[]) => (s.length === 4 && s[2] === 1 && s[3] === 1 ? s.slice(0, 2) : s);
  return strip(a).join(",") === strip(b).join(",");
}

/**
 * Reads a single-file checkpoint into a diffusers folder at `out`, with the configs, tokenizers
 * and scheduler of `configFrom` (see the file comment). A `v_pred` marker sets the copied
 * scheduler's prediction_type to v_prediction, `ztsnr` its rescale_betas_zero_snr.
 */
export function importSingleFileCheckpoint(file: string, out: string, opts: ImportCheckpointOptions = {}): ImportCheckpointResult {
  const f = SafetensorsFile.open(file);
  let defaultsDir: string | null = null;
  try {
    const keys = f.keys();
    const fromKeys = detectFileFamily(keys);
    if (!keys.some((k) => k.startsWith(UNET_PREFIX))) throw new CheckpointError(`${file} holds no "${UNET_PREFIX}…" keys; is it a Stable Diffusion checkpoint (and not a LoRA or a bare UNet)?`);
    let refRoot: string;
    let refName: string;
    let defaults: Record<string, Map<string, number[]>> | null = null;
    if (opts.configFrom !== undefined) {
      refRoot = resolve(opts.configFrom);
      refName = `--config-from ${opts.configFrom}`;
      if (!existsSync(join(refRoot, "model_index.json"))) throw new CheckpointError(`${refName}: not a diffusers model folder (no model_index.json)`);
    } else {
      const family = opts.family ?? fromKeys;
      if (family !== "sd1") {
        throw new CheckpointError(`${file} is a ${family ?? "unknown-family"} checkpoint; only SD1.x has built-in configs. Give --config-from FOLDER, a diffusers folder of the same architecture (e.g. the base model)`);
      }
      defaultsDir = join(dirname(resolve(out)), `.${basename(resolve(out))}.defaults-${process.pid}.${randomBytes(4).toString("hex")}`);
      defaults = writeSd15Configs(defaultsDir);
      refRoot = defaultsDir;
      refName = "SD1.5's built-in configs (give --config-from for other sizes)";
    }
    const refFamily = detectFolderFamily(refRoot);
    const family = opts.family ?? fromKeys ?? refFamily;
    if (fromKeys !== null && fromKeys !== family) throw new CheckpointError(`${file} holds a ${fromKeys} checkpoint (by its key prefixes), not ${family}`);
    if (refFamily !== family) throw new CheckpointError(`${file} is a ${family} checkpoint but ${refName} is a ${refFamily} folder; give a reference folder of the same family`);

    const fromRef = (component: string, base: string): Expected =>
      defaults ? { dir: component, fileName: `${base}.safetensors`, shapes: defaults[component]! } : expectedComponent(refRoot, component, base);
    const expected: Record<string, Expected> = {
      unet: fromRef("unet", "diffusion_pytorch_model"),
      vae: fromRef("vae", "diffusion_pytorch_model"),
    };
    for (const slot of TEXT_SLOTS[family]) expected[slot.component] = fromRef(slot.component, "model");
    const layout = unetLayoutFromConfig(readJson(join(refRoot, "unet", "config.json")), join(refRoot, "unet", "config.json"));
    const unetTable = unetNameTable(layout, expected.unet!.shapes.keys(), `${refRoot}/unet`);
    const vaeUps = vaeUpBlockCount(expected.vae!.shapes.keys());

    const got: Record<string, Map<string, RawTensor>> = {};
    for (const c of Object.keys(expected)) got[c] = new Map();
    const skipped: { key: string; reason: string }[] = [];
    const unknown: string[] = [];
    const markers = new Set<string>();
    const openClipKeys = new Map<TextSlot, string[]>();
    for (const key of keys) {
      if (key === "v_pred" || key === "ztsnr") {
        markers.add(key);
        continue;
      }
      const reason = skippedReason(key);
      if (reason !== null) {
        skipped.push({ key, reason });
        continue;
      }
      if (key.startsWith(UNET_PREFIX)) {
        const name = unetTable.toDiffusers.get(key.slice(UNET_PREFIX.length));
        if (name === undefined) unknown.push(key);
        else got.unet!.set(name, f.readRaw(key));
        continue;
      }
      if (key.startsWith(VAE_PREFIX)) {
        const name = vaeToDiffusers(key.slice(VAE_PREFIX.length), vaeUps);
        if (name === null) unknown.push(key);
        else got.vae!.set(name, f.readRaw(key));
        continue;
      }
      const slot = TEXT_SLOTS[family].find((s) => key.startsWith(s.prefix));
      if (slot === undefined) {
        unknown.push(key);
      } else if (slot.encoding === "clip") {
        let name = key.slice(slot.prefix.length);
        if (!name.startsWith("text_model.") && !name.startsWith("text_projection")) name = `text_model.${name}`; // transformers < 4.31 spelling
        got[slot.component]!.set(name, f.readRaw(key));
      } else {
        openClipKeys.set(slot, [...(openClipKeys.get(slot) ?? []), key.slice(slot.prefix.length)]);
      }
    }
    for (const [slot, names] of openClipKeys) {
      const { tensors, unmapped } = openClipToClip(names, (n) => f.readRaw(slot.prefix + n));
      unknown.push(...unmapped.map((n) => slot.prefix + n));
      const want = expected[slot.component]!.shapes;
      const extraLayers = new Set<string>();
      for (const [n, t] of tensors) {
        // SD2 files keep open_clip's last layer, which diffusers' SD2 text encoder leaves out
        const layer = /^text_model\.encoder\.layers\.(\d+)\./.exec(n);
        if (!want.has(n) && layer) extraLayers.add(layer[1]!);
        else if (n === "text_projection.weight" && !want.has(n)) skipped.push({ key: `${slot.prefix}text_projection`, reason: "the reference text encoder has no projection" });
        else got[slot.component]!.set(n, t);
      }
      for (const l of extraLayers) {
        skipped.push({ key: `${slot.prefix}transformer.resblocks.${l}.*`, reason: "text-encoder layer beyond the reference config's num_hidden_layers (diffusers' SD2 text encoder stops one layer short)" });
      }
    }
    const show = (l: string[]) => l.slice(0, 15).join(", ") + (l.length > 15 ? `, … (${l.length} in all)` : "");
    if (unknown.length > 0) throw new CheckpointError(`${file}: keys with no place in a ${family} folder laid out as ${refName}: ${show(unknown)}`);

    // names and shapes against the reference folder
    const problems: string[] = [];
    for (const [c, exp] of Object.entries(expected)) {
      const have = got[c]!;
      const missing = [...exp.shapes.keys()].filter((n) => !have.has(n));
      const extra = [...have.keys()].filter((n) => !exp.shapes.has(n));
      if (missing.length) problems.push(`${c}: missing ${show(missing)}`);
      if (extra.length) problems.push(`${c}: not in the reference ${show(extra)}`);
      for (const [n, t] of have) {
        const want = exp.shapes.get(n);
        if (want === undefined) continue;
        if (t.shape.join(",") === want.join(",")) continue;
        if (sameUpTo1x1(t.shape, want)) have.set(n, rawReshape(t, want));
        else problems.push(`${c}: ${n} is [${t.shape.join(", ")}] in the file but [${want.join(", ")}] in the reference`);
      }
    }
    if (problems.length > 0) {
      throw new CheckpointError(`${file} does not fit ${refName}: ${problems.slice(0, 6).join("; ")}. Give --config-from, a reference folder of the same architecture and size.`);
    }

    // assemble beside the target, then rename into place
    const target = resolve(out);
    if (existsSync(target)) {
      const entries = statSync(target).isDirectory() ? readdirSync(target) : null;
      if (entries === null || (entries.length > 0 && !entries.includes("model_index.json"))) {
        throw new CheckpointError(`--out ${out} exists and is not an empty folder or a model folder; refusing to replace it`);
      }
    }
    mkdirSync(dirname(target), { recursive: true });
    const tmp = join(dirname(target), `.${basename(target)}.tmp-${process.pid}.${randomBytes(4).toString("hex")}`);
    try {
      copyConfigs(refRoot, tmp);
      const counts: Record<string, number> = {};
      for (const [c, exp] of Object.entries(expected)) {
        mkdirSync(join(tmp, exp.dir), { recursive: true });
        writeSafetensorsSync(join(tmp, exp.dir, exp.fileName), got[c]!, { format: "pt" });
        counts[c] = got[c]!.size;
      }
      let predictionType: string | null = null;
      const schedPath = join(tmp, "scheduler", "scheduler_config.json");
      if (existsSync(schedPath)) {
        const sched = readJson(schedPath);
        if (markers.has("v_pred")) sched.prediction_type = "v_prediction";
        if (markers.has("ztsnr")) sched.rescale_betas_zero_snr = true;
        if (markers.size > 0) writeFileSync(schedPath, `${JSON.stringify(sched, null, 2)}\n`);
        predictionType = typeof sched.prediction_type === "string" ? sched.prediction_type : "epsilon";
      }
      if (existsSync(target)) rmSync(target, { recursive: true, force: true });
      renameSync(tmp, target);
      return { family, out: target, counts, skipped, predictionType };
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
  } finally {
    f.close();
    if (defaultsDir !== null) rmSync(defaultsDir, { recursive: true, force: true });
  }
}
