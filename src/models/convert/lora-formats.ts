// LoRA files in the three spellings image tools read, converted through one model-free form
// (component → diffusers module path → {down = A [r, in], up = B [out, r], alpha}), on the stored
// bytes so every dtype converts exactly:
//
//   diffusers  pytorch_lora_weights.safetensors: `unet.<path>.lora.down.weight` / `.lora.up.weight`
//              (`text_encoder.…`, `text_encoder_2.…`), metadata "lora_adapter_metadata" = peft's
//              LoraConfig per component (`unet.r`, `unet.lora_alpha`, `unet.alpha_pattern`, …).
//              Also read: lora_A/lora_B, lora_linear_layer.down/up, the attention-processor
//              spelling (`attn1.processor.to_q_lora.down`), `<path>.alpha` keys.
//   peft       a folder: adapter_model.safetensors (`base_model.model.<path>.lora_A.weight`,
//              `.lora_B.weight`) + adapter_config.json (r, lora_alpha, target_modules,
//              alpha_pattern); one model's adapters.
//   kohya      kohya-ss / AUTOMATIC1111 / ComfyUI: `lora_unet_<module path with _>.lora_down.weight`,
//              `.lora_up.weight`, `.alpha` (a scalar), text encoders `lora_te_` (SD1/2) or
//              `lora_te1_` / `lora_te2_` (SDXL). The UNet paths use the original SD / SGM block
//              names (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`), written from the block
//              layout (unet-names.ts); diffusers-named kohya files (`lora_unet_down_blocks_…`) read too.
//
// The scale is alpha / rank in all three (kohya's convention, peft's without rslora, and ours:
// LoraLinear.scale), so alpha passes through unchanged. kohya stores alpha as f32.
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { SafetensorsFile, writeSafetensorsSync, type RawTensor, type SafetensorsDtype } from "../../io/safetensors.js";
import { fromBytes, toBytes, type DType, type Tensor } from "../../tensor/index.js";
import type { Module } from "../../nn/module.js";
import { Linear } from "../../nn/layers.js";
import { LORA_ADAPTER_METADATA_KEY, LoraLinear, loadLoraStateDict, loraLayers } from "../../nn/lora.js";
import { UNetNameMapper, type UNetBlockLayout } from "./unet-names.js";
import { componentWeightFiles } from "../pipeline.js";

export type LoraFormat = "diffusers" | "peft" | "kohya";
export const LORA_FORMATS: readonly LoraFormat[] = ["diffusers", "peft", "kohya"];
export type LoraComponent = "unet" | "text_encoder" | "text_encoder_2";
const COMPONENTS: readonly LoraComponent[] = ["unet", "text_encoder", "text_encoder_2"];

export interface LoraLayerWeights {
  /** A: [rank, in] (kohya's lora_down). */
  down: RawTensor;
  /** B: [out, rank] (kohya's lora_up). */
  up: RawTensor;
  /** The update is scaled by alpha / rank. */
  alpha: number;
}

/** component → diffusers module path (e.g. down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q) → weights. */
export type LoraWeights = Map<LoraComponent, Map<string, LoraLayerWeights>>;

export interface LoraFile {
  weights: LoraWeights;
  format: LoraFormat;
  /** The safetensors file read. */
  path: string;
  /** Keys that are not LoRA down/up/alpha tensors of a known layer, or lack their partner. */
  unmatched: string[];
}

export class LoraFormatError extends Error {
  override readonly name = "LoraFormatError";
}

export const DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors";
export const PEFT_WEIGHTS_FILE = "adapter_model.safetensors";
export const PEFT_CONFIG_FILE = "adapter_config.json";

function listed(keys: string[], max = 40): string {
  return keys.slice(0, max).join(", ") + (keys.length > max ? `, … (${keys.length} in all)` : "");
}

// ---- kohya names ------------------------------------------------------------------------------

/** Multi-word names of UNet / CLIP modules, so `_`-joined kohya names can be split back at the dots. */
const MULTI_WORD = [
  "input_blocks", "output_blocks", "middle_block", "transformer_blocks", "proj_in", "proj_out", "to_q", "to_k", "to_v", "to_out",
  "in_layers", "out_layers", "emb_layers", "skip_connection", "time_embed", "label_emb", "down_blocks", "up_blocks", "mid_block",
  "time_embedding", "add_embedding", "linear_1", "linear_2", "conv_in", "conv_out", "conv_norm_out", "time_emb_proj", "conv_shortcut",
  "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "layer_norm1", "layer_norm2", "final_layer_norm",
  "token_embedding", "position_embedding", "text_projection",
].map((w) => w.split("_")).sort((a, b) => b.length - a.length);

/** `input_blocks_4_1_transformer_blocks_0_attn1_to_out_0` → `input_blocks.4.1.transformer_blocks.0.attn1.to_out.0`. */
export function dotsFromUnderscores(name: string): string {
  const parts = name.split("_");
  const out: string[] = [];
  for (let i = 0; i < parts.length;) {
    const word = MULTI_WORD.find((w) => w.every((p, k) => parts[i + k] === p));
    out.push(word ? word.join("_") : parts[i]!);
    i += word ? word.length : 1;
  }
  return out.join(".");
}

const ORIGINAL_UNET = /^(input_blocks|middle_block|output_blocks|time_embed|label_emb|out)\./;

/** kohya's prefix per component; SDXL-style te1/te2 when the set has a second text encoder or the UNet is SDXL-like. */
function kohyaPrefix(component: LoraComponent, twoEncoders: boolean): string {
  if (component === "unet") return "lora_unet_";
  if (component === "text_encoder_2") return "lora_te2_";
  return twoEncoders ? "lora_te1_" : "lora_te_";
}

// ---- reading ------------------------------------------------------------------------------------

export interface ReadLoraOptions {
  /** The UNet's block layout: needed for kohya files with original-SD (input_blocks) names. */
  unetLayout?: UNetBlockLayout;
  /** alpha for diffusers files without metadata or alpha keys (default: the rank, scale 1). */
  alpha?: number;
}

/** The safetensors file of a LoRA given as a file, a folder (peft or diffusers layout) or a training run folder (its final/). */
export function resolveLoraPath(path: string): string {
  const p = resolve(path);
  if (!existsSync(p)) throw new LoraFormatError(`LoRA ${path} does not exist`);
  if (!statSync(p).isDirectory()) return p;
  for (const name of [PEFT_WEIGHTS_FILE, DIFFUSERS_LORA_FILE]) if (existsSync(join(p, name))) return join(p, name);
  if (existsSync(join(p, "final"))) return resolveLoraPath(join(p, "final")); // a training run folder
  throw new LoraFormatError(`LoRA folder ${path} holds neither ${PEFT_WEIGHTS_FILE} (peft) nor ${DIFFUSERS_LORA_FILE} (diffusers), nor a final/ folder with one`);
}

interface PeftConfig { r?: number; lora_alpha?: number; alpha_pattern?: Record<string, number>; use_rslora?: boolean; use_dora?: boolean }

function readPeftConfig(file: string): PeftConfig | null {
  const p = join(dirname(file), PEFT_CONFIG_FILE);
  if (!existsSync(p)) return null;
  try {
    return JSON.parse(readFileSync(p, "utf8")) as PeftConfig;
  } catch (err) {
    throw new LoraFormatError(`${p} is not valid JSON (${(err as Error).message})`);
  }
}

/** peft's pattern rule: a key matches a module path equal to it or ending in "." + key (keys may be regexes). */
function patternValue(pattern: Record<string, number> | undefined, path: string): number | undefined {
  if (!pattern) return undefined;
  for (const [k, v] of Object.entries(pattern)) {
    if (path === k || path.endsWith(`.${k}`)) return v;
    try {
      if (new RegExp(`^(.*\\.)?${k}$`).test(path)) return v;
    } catch {
      // not a regex: only the literal comparison applies
    }
  }
  return undefined;
}

type Part = "down" | "up" | "alpha";
interface Parsed { component: LoraComponent; path: string; part: Part }

const DIFFUSERS_PARTS: [RegExp, Part][] = [
  [/\.lora_A(?:\.[A-Za-z_][A-Za-z0-9_]*)?\.weight$/, "down"],
  [/\.lora_B(?:\.[A-Za-z_][A-Za-z0-9_]*)?\.weight$/, "up"],
  [/\.lora(?:_linear_layer)?\.down\.weight$/, "down"],
  [/\.lora(?:_linear_layer)?\.up\.weight$/, "up"],
  [/\.alpha$/, "alpha"],
];

function parseDiffusersKey(key: string, defaultComponent: LoraComponent): Parsed | null {
  let k = key;
  let component = defaultComponent;
  if (k.startsWith("base_model.model.")) k = k.slice("base_model.model.".length);
  for (const c of ["text_encoder_2", "text_encoder", "unet"] as const) {
    if (k.startsWith(`${c}.`)) {
      component = c;
      k = k.slice(c.length + 1);
      break;
    }
  }
  // the attention-processor spelling of diffusers < 0.21
  k = k.replace(/\.processor\.(to_q|to_k|to_v)_lora\./, ".$1.lora.").replace(/\.processor\.to_out_lora\./, ".to_out.0.lora.");
  for (const [re, part] of DIFFUSERS_PARTS) {
    const m = re.exec(k);
    if (m) return { component, path: k.slice(0, m.index), part };
  }
  return null;
}

function parseKohyaKey(key: string, mapper: UNetNameMapper | null): Parsed | "needs-layout" | null {
  const m = /^lora_(unet|te1|te2|te)_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$/.exec(key);
  if (!m) return null;
  const part: Part = m[3] === "alpha" ? "alpha" : m[3] === "lora_down.weight" ? "down" : "up";
  let path = dotsFromUnderscores(m[2]!);
  const component: LoraComponent = m[1] === "unet" ? "unet" : m[1] === "te2" ? "text_encoder_2" : "text_encoder";
  if (component === "unet" && ORIGINAL_UNET.test(path)) {
    if (mapper === null) return "needs-layout";
    const d = mapper.toDiffusers(path);
    if (d === null) return null;
    path = d;
  }
  return { component, path, part };
}

function scalarOf(f: SafetensorsFile, key: string): number {
  const t = f.read(key);
  try {
    if (t.shape.reduce((a, b) => a * b, 1) !== 1) throw new LoraFormatError(`${f.path}: "${key}" should be one number, got shape [${t.shape.join(", ")}]`);
    return t.reshape([]).item();
  } finally {
    t.dispose();
  }
}

/**
 * Reads a LoRA file (or folder) in any of the three formats. Keys that are not adapter tensors,
 * and down/up tensors without their partner, are returned in `unmatched` (the caller decides
 * whether that is an error); kohya files with original-SD UNet names need `unetLayout`.
 */
export function readLoraFile(path: string, opts: ReadLoraOptions = {}): LoraFile {
  const file = resolveLoraPath(path);
  const f = SafetensorsFile.open(file);
  try {
    const keys = f.keys();
    if (keys.length === 0) throw new LoraFormatError(`LoRA ${file} holds no tensors`);
    const kohya = keys.some((k) => /^lora_(unet|te1|te2|te)_/.test(k));
    const peftConfig = readPeftConfig(file);
    const peft = !kohya && (basename(file) === PEFT_WEIGHTS_FILE || keys.every((k) => k.startsWith("base_model.model.")));
    const format: LoraFormat = kohya ? "kohya" : peft ? "peft" : "diffusers";
    if (peft && peftConfig?.use_dora) throw new LoraFormatError(`${file}: DoRA adapters (use_dora in ${PEFT_CONFIG_FILE}) are not supported`);
    const mapper = opts.unetLayout ? new UNetNameMapper(opts.unetLayout) : null;
    const parts = new Map<string, Partial<Record<Part, string>>>();
    const unmatched: string[] = [];
    let needsLayout = false;
    for (const key of keys) {
      const p = kohya ? parseKohyaKey(key, mapper) : parseDiffusersKey(key, "unet");
      if (p === "needs-layout") {
        needsLayout = true;
        unmatched.push(key);
        continue;
      }
      if (p === null) {
        unmatched.push(key);
        continue;
      }
      const id = `${p.component}\u0000${p.path}`;
      const entry = parts.get(id) ?? {};
      if (entry[p.part] !== undefined) throw new LoraFormatError(`${file}: "${key}" and "${entry[p.part]}" are the same tensor of ${p.component} ${p.path}`);
      entry[p.part] = key;
      parts.set(id, entry);
    }
    if (needsLayout) {
      throw new LoraFormatError(`${file} names UNet layers the original-SD way (lora_unet_input_blocks_…); give the base model (--model FOLDER, or sd1 / sd2 / sdxl) so the blocks can be numbered`);
    }
    // alphas: kohya per layer; diffusers from metadata (or alpha keys); peft from adapter_config.json
    let meta: Record<string, unknown> = {};
    const rawMeta = f.metadata[LORA_ADAPTER_METADATA_KEY];
    if (rawMeta !== undefined) {
      try {
        meta = JSON.parse(rawMeta) as Record<string, unknown>;
      } catch {
        throw new LoraFormatError(`${file}: metadata "${LORA_ADAPTER_METADATA_KEY}" is not valid JSON`);
      }
    }
    const weights: LoraWeights = new Map();
    for (const [id, entry] of parts) {
      const [component, modulePath] = id.split("\u0000") as [LoraComponent, string];
      if (entry.down === undefined || entry.up === undefined) {
        unmatched.push(...Object.values(entry) as string[]);
        continue;
      }
      const down = f.readRaw(entry.down);
      const up = f.readRaw(entry.up);
      const rank = down.shape[0]!;
      let alpha: number | undefined = entry.alpha === undefined ? undefined : scalarOf(f, entry.alpha);
      if (alpha === undefined && format === "peft" && peftConfig) {
        const a = patternValue(peftConfig.alpha_pattern, modulePath) ?? peftConfig.lora_alpha;
        // rslora scales by alpha / √r; as alpha / r that is alpha·√r
        if (a !== undefined) alpha = peftConfig.use_rslora ? a * Math.sqrt(rank) : a;
      }
      if (alpha === undefined && format !== "kohya") {
        // diffusers' per-component blob, or a bare peft-style one (a peft file without its adapter_config.json)
        const pattern = (meta[`${component}.alpha_pattern`] ?? meta.alpha_pattern) as Record<string, number> | undefined;
        const a = patternValue(pattern, modulePath) ?? meta[`${component}.lora_alpha`] ?? meta.lora_alpha;
        if (typeof a === "number") alpha = meta[`${component}.use_rslora`] === true ? a * Math.sqrt(rank) : a;
      }
      alpha ??= opts.alpha ?? rank;
      let byPath = weights.get(component);
      if (byPath === undefined) weights.set(component, (byPath = new Map()));
      byPath.set(modulePath, { down, up, alpha });
    }
    return { weights, format, path: file, unmatched };
  } finally {
    f.close();
  }
}

// ---- writing ------------------------------------------------------------------------------------

function targetName(path: string): string {
  const parts = path.split(".");
  const last = parts[parts.length - 1]!;
  return /^\d+$/.test(last) && parts.length > 1 ? `${parts[parts.length - 2]}.${last}` : last;
}

/** peft LoraConfig fields for one component's layers: the common rank/alpha, patterns for the rest. */
function peftFields(layers: Map<string, LoraLayerWeights>): Record<string, unknown> {
  const count = (values: number[]) => {
    const c = new Map<number, number>();
    for (const v of values) c.set(v, (c.get(v) ?? 0) + 1);
    return [...c.entries()].sort((a, b) => b[1] - a[1])[0]![0];
  };
  const entries = [...layers.entries()];
  const r = count(entries.map(([, l]) => l.down.shape[0]!));
  const alpha = count(entries.map(([, l]) => l.alpha));
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const [p, l] of entries) {
    if (l.down.shape[0] !== r) rankPattern[p] = l.down.shape[0]!;
    if (l.alpha !== alpha) alphaPattern[p] = l.alpha;
  }
  return {
    r, lora_alpha: alpha, target_modules: [...new Set(entries.map(([p]) => targetName(p)))].sort(),
    rank_pattern: rankPattern, alpha_pattern: alphaPattern,
    peft_type: "LORA", bias: "none", use_rslora: false, use_dora: false, lora_dropout: 0, init_lora_weights: true,
  };
}

export interface WriteLoraOptions {
  /** Needed to write kohya UNet names (original-SD blocks). */
  unetLayout?: UNetBlockLayout;
  /** Extra safetensors metadata (e.g. the training method). */
  metadata?: Record<string, string>;
  /**
   * kohya text-encoder prefixes: true → lora_te1_ / lora_te2_ (SDXL), false → lora_te_. Default:
   * true when the adapters include text_encoder_2 or the UNet layout is SDXL's (3 levels, no
   * attention in the first).
   */
  twoTextEncoders?: boolean;
}

/**
 * Writes the adapters in `format`. diffusers and kohya: `out` is the .safetensors file; peft:
 * `out` is a folder (adapter_model.safetensors + adapter_config.json). Returns the files written.
 */
export function writeLoraFile(weights: LoraWeights, format: LoraFormat, out: string, opts: WriteLoraOptions = {}): string[] {
  const components = COMPONENTS.filter((c) => (weights.get(c)?.size ?? 0) > 0);
  if (components.length === 0) throw new LoraFormatError("writeLoraFile: no adapters to write");
  const tensors = new Map<string, RawTensor>();
  const metadata: Record<string, string> = { format: "pt", ...opts.metadata };
  if (format === "diffusers") {
    const blob: Record<string, unknown> = {};
    for (const c of components) {
      for (const [p, l] of weights.get(c)!) {
        tensors.set(`${c}.${p}.lora.down.weight`, l.down);
        tensors.set(`${c}.${p}.lora.up.weight`, l.up);
      }
      for (const [k, v] of Object.entries(peftFields(weights.get(c)!))) blob[`${c}.${k}`] = v;
    }
    metadata[LORA_ADAPTER_METADATA_KEY] = JSON.stringify(blob);
    mkdirSync(dirname(resolve(out)), { recursive: true });
    writeSafetensorsSync(out, tensors, metadata);
    return [resolve(out)];
  }
  if (format === "peft") {
    if (components.length > 1 || components[0] !== "unet") {
      throw new LoraFormatError(`the peft format holds one model's adapters; these adapters cover ${components.join(", ")} (use diffusers or kohya for text-encoder adapters)`);
    }
    if (out.endsWith(".safetensors")) throw new LoraFormatError(`peft output is a folder (${PEFT_WEIGHTS_FILE} + ${PEFT_CONFIG_FILE}); give a folder, not ${out}`);
    const layers = weights.get("unet")!;
    for (const [p, l] of layers) {
      tensors.set(`base_model.model.${p}.lora_A.weight`, l.down);
      tensors.set(`base_model.model.${p}.lora_B.weight`, l.up);
    }
    const dir = resolve(out);
    mkdirSync(dir, { recursive: true });
    const fields = peftFields(layers);
    const config = {
      ...fields, base_model_name_or_path: null, task_type: null, inference_mode: true, fan_in_fan_out: false,
      modules_to_save: null, layers_to_transform: null, layers_pattern: null, revision: null,
    };
    // the scale also in the weights file, for readers that never see adapter_config.json
    const withScale = { ...metadata, [LORA_ADAPTER_METADATA_KEY]: JSON.stringify({ r: fields.r, lora_alpha: fields.lora_alpha, alpha_pattern: fields.alpha_pattern }) };
    writeSafetensorsSync(join(dir, PEFT_WEIGHTS_FILE), tensors, withScale);
    writeFileSync(join(dir, PEFT_CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
    return [join(dir, PEFT_WEIGHTS_FILE), join(dir, PEFT_CONFIG_FILE)];
  }
  // kohya
  const mapper = opts.unetLayout ? new UNetNameMapper(opts.unetLayout) : null;
  if (components.includes("unet") && mapper === null) {
    throw new LoraFormatError("kohya UNet names use the original-SD block numbering; give the base model (--model FOLDER, or sd1 / sd2 / sdxl)");
  }
  const twoEncoders = opts.twoTextEncoders ?? (components.includes("text_encoder_2") || (mapper?.layout.up.length === 3 && mapper.layout.down[0]!.attention === false));
  const dims = new Set<number>();
  const alphas = new Set<number>();
  for (const c of components) {
    for (const [p, l] of weights.get(c)!) {
      let name = p;
      if (c === "unet") {
        const o = mapper!.toOriginal(p);
        if (o === null) throw new LoraFormatError(`UNet layer "${p}" has no original-SD name for this block layout (is --model the base model?)`);
        name = o;
      }
      const key = kohyaPrefix(c, twoEncoders) + name.replace(/\./g, "_");
      tensors.set(`${key}.lora_down.weight`, l.down);
      tensors.set(`${key}.lora_up.weight`, l.up);
      const alpha = new Float32Array([l.alpha]);
      tensors.set(`${key}.alpha`, { dtype: "F32", shape: [], bytes: new Uint8Array(alpha.buffer) });
      dims.add(l.down.shape[0]!);
      alphas.add(l.alpha);
    }
  }
  metadata.ss_network_module = "networks.lora";
  if (dims.size === 1) metadata.ss_network_dim = String([...dims][0]);
  if (alphas.size === 1) metadata.ss_network_alpha = String([...alphas][0]);
  mkdirSync(dirname(resolve(out)), { recursive: true });
  writeSafetensorsSync(out, tensors, metadata);
  return [resolve(out)];
}

// ---- models -------------------------------------------------------------------------------------

const DTYPE_OF: Partial<Record<SafetensorsDtype, DType>> = { F16: "f16", BF16: "bf16", F32: "f32", F64: "f64" };

function tensorOf(t: RawTensor, what: string): Tensor {
  const dtype = DTYPE_OF[t.dtype];
  if (dtype === undefined) throw new LoraFormatError(`${what} is ${t.dtype}; LoRA weights must be floating point`);
  return fromBytes(t.bytes, t.shape, dtype);
}

/** The injected adapters of a module (src/nn/lora), as stored bytes in the module's dtype. */
export function loraWeightsOf(module: Module): Map<string, LoraLayerWeights> {
  const out = new Map<string, LoraLayerWeights>();
  const raw = (t: Tensor): RawTensor => {
    const dtype = ({ f32: "F32", f16: "F16", bf16: "BF16", f64: "F64" } as Record<string, SafetensorsDtype>)[t.dtype];
    if (dtype === undefined) throw new LoraFormatError(`LoRA weight of dtype ${t.dtype} cannot be saved`);
    if (t.device === "cpu") return { dtype, shape: [...t.shape], bytes: toBytes(t) };
    const cpu = t.cpu();
    try {
      return { dtype, shape: [...t.shape], bytes: toBytes(cpu) };
    } finally {
      cpu.dispose();
    }
  };
  for (const [path, l] of loraLayers(module)) out.set(path, { down: raw(l.lora_A.weight), up: raw(l.lora_B.weight), alpha: l.alpha });
  return out;
}

/**
 * Injects and fills adapters from `layers` (loadLoraStateDict), then sets each layer's alpha.
 * Every path that names no Linear layer of the module is listed in the error.
 */
export function applyLoraWeights(module: Module, layers: Map<string, LoraLayerWeights>, source: string): void {
  const linear = new Set<string>();
  for (const [path, m] of module.namedModules()) if (m instanceof Linear || m instanceof LoraLinear) linear.add(path);
  const missing = [...layers.keys()].filter((p) => !linear.has(p));
  if (missing.length > 0) {
    throw new LoraFormatError(`LoRA ${source}: ${missing.length} adapted layer(s) match no Linear layer of the model: ${listed(missing, 1000)}. Is this LoRA for this base model?`);
  }
  const state = new Map<string, Tensor>();
  try {
    for (const [p, l] of layers) {
      state.set(`${p}.lora_A.weight`, tensorOf(l.down, `${source}: ${p} down`));
      state.set(`${p}.lora_B.weight`, tensorOf(l.up, `${source}: ${p} up`));
    }
    const first = layers.values().next().value as LoraLayerWeights | undefined;
    loadLoraStateDict(module, state, { alpha: first?.alpha, source });
  } finally {
    for (const t of state.values()) t.dispose();
  }
  const byPath = new Map(loraLayers(module));
  for (const [p, l] of layers) byPath.get(p)!.alpha = l.alpha;
}

/**
 * The adapted layers that name no weight-bearing module of a model folder's components (read
 * from the weight files' headers only: nothing is loaded), as "component: path".
 */
export function layersMissingFromFolder(weights: LoraWeights, folder: string): string[] {
  const missing: string[] = [];
  for (const [component, layers] of weights) {
    const dir = join(folder, component);
    if (!existsSync(dir)) {
      missing.push(...[...layers.keys()].map((p) => `${component}: ${p} (the model has no ${component})`));
      continue;
    }
    const modules = new Set<string>();
    for (const file of componentWeightFiles(dir, component === "unet" ? "diffusion_pytorch_model" : "model")) {
      const f = SafetensorsFile.open(file);
      try {
        for (const k of f.keys()) if (k.endsWith(".weight")) modules.add(k.slice(0, -".weight".length));
      } finally {
        f.close();
      }
    }
    for (const p of layers.keys()) if (!modules.has(p)) missing.push(`${component}: ${p}`);
  }
  return missing;
}

/** Throws listing every key of the file that matched no adapter layer. */
export function assertAllMatched(file: LoraFile): void {
  if (file.unmatched.length > 0) {
    throw new LoraFormatError(`LoRA ${file.path} (${file.format} format): ${file.unmatched.length} key(s) are not LoRA down/up/alpha tensors of a known layer: ${listed(file.unmatched, 1000)}`);
  }
}
