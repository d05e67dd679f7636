// LoRA (Hu et al. 2021) adapters on Linear layers, as peft applies them to diffusers UNets:
// y = base(x) + (alpha / rank) · B(A(x)), A: in → rank, B: rank → out, B starts at zero so a
// fresh adapter changes nothing. Disabling the adapters gives the exact base network — the
// Diffusion-DPO reference model with LoRA is the same network with adapters off.
//
// Names: the wrapped layer keeps its own parameter names (`…to_q.weight`), the adapter adds
// `…to_q.lora_A.weight` and `…to_q.lora_B.weight` (peft's naming without the adapter name).
// diffusers' pytorch_lora_weights.safetensors stores the same tensors as
// `unet.…to_q.lora.down.weight` / `unet.…to_q.lora.up.weight`; both load.
import type { Tensor } from "../tensor/tensor.js";
import { tidy } from "../tensor/tensor.js";
import { noGrad } from "../tensor/ops.js";
import { Module } from "./module.js";
import { Linear } from "./layers.js";
import { normal } from "./init.js";

/** diffusers' default LoRA targets for UNet attention (train_dreambooth_lora, diffusion_dpo). */
export const DEFAULT_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"] as const;

export interface LoraOptions {
  rank: number;
  /** Scale numerator: the update is multiplied by alpha / rank. Default: rank (scale 1). */
  alpha?: number;
  /** Module paths to wrap: a Linear whose dotted path equals a target or ends with "." + target. */
  targets?: readonly string[];
  /**
   * "kaiming": A ~ U(±1/√in) (peft's default, kaiming_uniform_ with a = √5);
   * "gaussian": A ~ N(0, 1/rank) (peft's init_lora_weights="gaussian", used by diffusers' DPO example).
   * B is zero either way.
   */
  init?: "kaiming" | "gaussian";
}

export class LoraLinear extends Module {
  readonly base: Linear;
  readonly lora_A: Linear;
  readonly lora_B: Linear;
  readonly rank: number;
  /** Mutable so per-layer alphas (kohya's `.alpha` tensors) can be applied after injection. */
  alpha: number;
  enabled = true;

  constructor(base: Linear, rank: number, alpha = rank, init: "kaiming" | "gaussian" = "kaiming") {
    super();
    if (!Number.isInteger(rank) || rank <= 0) throw new Error(`LoRA rank must be a positive integer, got ${rank}`);
    if (!Number.isFinite(alpha) || alpha <= 0) throw new Error(`LoRA alpha must be a positive number, got ${alpha}`);
    this.base = base;
    this.rank = rank;
    this.alpha = alpha;
    // The base layer's tensors keep their names (…to_q.weight) and gradient flags.
    const grads = [base.weight.requiresGrad, base.bias?.requiresGrad ?? false];
    this.param("weight", base.weight).setRequiresGrad(grads[0]!);
    if (base.bias) this.param("bias", base.bias).setRequiresGrad(grads[1]!);
    this.lora_A = this.child("lora_A", new Linear(base.inFeatures, rank, false));
    this.lora_B = this.child("lora_B", new Linear(rank, base.outFeatures, false));
    noGrad(() => {
      if (init === "gaussian") tidy(() => this.lora_A.weight.copy_(normal([rank, base.inFeatures], 0, 1 / rank)));
      this.lora_B.weight.fill_(0);
    });
  }

  get scale(): number {
    return this.alpha / this.rank;
  }
  get inFeatures(): number {
    return this.base.inFeatures;
  }
  get outFeatures(): number {
    return this.base.outFeatures;
  }

  forward(x: Tensor): Tensor {
    const y = this.base.forward(x);
    if (!this.enabled) return y;
    // one fused y + scale·BAx (torch.add's alpha) instead of a separate mul: the DPO step profile
    // counted 3× PyTorch's mul calls, most of them this scale (1 at the default α = r)
    return y.addScaled(this.lora_B.forward(this.lora_A.forward(x)), this.scale);
  }

  /** W + scale · B·A, the merged weight (a new tensor). */
  mergedWeight(): Tensor {
    return noGrad(() => this.base.weight.add(this.lora_B.weight.matmul(this.lora_A.weight).mul(this.scale)));
  }
}

function matches(path: string, targets: readonly string[]): boolean {
  return targets.some((t) => path === t || path.endsWith(`.${t}`));
}

/** [path, parent, name in parent, module] for every submodule. */
function* withParents(root: Module): Generator<[string, Module, string, Module]> {
  for (const [path, m] of root.namedModules()) {
    for (const [name, child] of m.children()) yield [path ? `${path}.${name}` : name, m, name, child];
  }
}

/**
 * Wraps every Linear whose path matches a target in a LoraLinear and freezes everything else
 * (only lora_A / lora_B train). Returns the names of the adapter parameters. Throws when no
 * layer matches or when adapters are already present.
 */
export function injectLora(module: Module, opts: LoraOptions): string[] {
  const targets = opts.targets ?? DEFAULT_LORA_TARGETS;
  if (loraLayers(module).length > 0) throw new Error("injectLora: this model already has LoRA adapters (merge or remove them first)");
  const matched = [...withParents(module)].filter(([path, , , m]) => matches(path, targets) && !(m instanceof LoraLinear));
  const notLinear = matched.filter(([, , , m]) => !(m instanceof Linear));
  if (notLinear.length > 0) {
    const [path, , , m] = notLinear[0]!;
    throw new Error(`injectLora: target "${path}" is a ${m.constructor.name}; LoRA here wraps Linear layers only (e.g. SD1's 1×1-conv proj_in cannot be a target)`);
  }
  if (matched.length === 0) {
    throw new Error(`injectLora: no Linear layer matches the targets ${JSON.stringify(targets)}; check the module names (e.g. "to_q", "to_out.0")`);
  }
  module.requiresGrad(false);
  const names: string[] = [];
  for (const [path, parent, name, m] of matched) {
    const lora = new LoraLinear(m as Linear, opts.rank, opts.alpha ?? opts.rank, opts.init ?? "kaiming");
    parent.replaceChild(name, lora);
    names.push(`${path}.lora_A.weight`, `${path}.lora_B.weight`);
  }
  return names;
}

/** Every LoRA-wrapped layer with its path. */
export function loraLayers(module: Module): [string, LoraLinear][] {
  return [...module.namedModules()].filter((e): e is [string, LoraLinear] => e[1] instanceof LoraLinear);
}

/** Turns all adapters on or off (off = the exact base network). */
export function setLoraEnabled(module: Module, enabled: boolean): void {
  for (const [, l] of loraLayers(module)) l.enabled = enabled;
}

/** Runs fn with the adapters disabled, restoring their previous state afterwards. */
export function withLoraDisabled<T>(module: Module, fn: () => T): T {
  const layers = loraLayers(module);
  const previous = layers.map(([, l]) => l.enabled);
  for (const [, l] of layers) l.enabled = false;
  try {
    return fn();
  } finally {
    layers.forEach(([, l], i) => { l.enabled = previous[i]!; });
  }
}

export interface LoraStateDictOptions {
  /** "peft": `<path>.lora_A.weight` (default); "diffusers": `<path>.lora.down.weight` as in pytorch_lora_weights.safetensors. */
  format?: "peft" | "diffusers";
  /** Prepended to every key; diffusers' files use "unet." (the default for format "diffusers"). */
  prefix?: string;
}

/** The adapter weights only (live tensors, not copies), keyed for saving. */
export function loraStateDict(module: Module, opts: LoraStateDictOptions = {}): Map<string, Tensor> {
  const format = opts.format ?? "peft";
  const prefix = opts.prefix ?? (format === "diffusers" ? "unet." : "");
  const [a, b] = format === "peft" ? ["lora_A", "lora_B"] : ["lora.down", "lora.up"];
  const out = new Map<string, Tensor>();
  for (const [path, l] of loraLayers(module)) {
    out.set(`${prefix}${path}.${a}.weight`, l.lora_A.weight);
    out.set(`${prefix}${path}.${b}.weight`, l.lora_B.weight);
  }
  return out;
}

/** rank, alpha and targets of the adapters (for adapter_config.json / safetensors metadata). */
export function loraConfig(module: Module): { rank: number; alpha: number; targets: string[] } | null {
  const layers = loraLayers(module);
  const first = layers[0];
  if (first === undefined) return null;
  const [, l0] = first;
  for (const [path, l] of layers) {
    if (l.rank !== l0.rank || l.alpha !== l0.alpha) throw new Error(`LoRA layers differ in rank/alpha (${path}: rank ${l.rank}, alpha ${l.alpha})`);
  }
  const targets = new Set<string>();
  for (const [path] of layers) {
    const parts = path.split(".");
    const last = parts[parts.length - 1]!;
    targets.add(/^\d+$/.test(last) && parts.length > 1 ? `${parts[parts.length - 2]}.${last}` : last);
  }
  return { rank: l0.rank, alpha: l0.alpha, targets: [...targets] };
}

/**
 * Maps a key from any of the formats diffusers reads to `<path>.lora_A.weight` /
 * `<path>.lora_B.weight`: peft (`lora_A`, optionally with an adapter name `lora_A.default`),
 * diffusers (`lora.down`/`lora.up`, `lora_linear_layer.down/up`), the old attention-processor
 * format (`attn1.processor.to_q_lora.down`), with or without `unet.` / `base_model.model.`.
 * Returns null for keys that are not LoRA A/B weights.
 */
export function normalizeLoraKey(key: string): string | null {
  let k = key;
  for (const p of ["unet.", "base_model.model."]) if (k.startsWith(p)) k = k.slice(p.length);
  k = k.replace(/\.processor\.(to_q|to_k|to_v)_lora\./, ".$1.lora.").replace(/\.processor\.to_out_lora\./, ".to_out.0.lora.");
  k = k.replace(/\.lora(?:_linear_layer)?\.down\.weight$/, ".lora_A.weight").replace(/\.lora(?:_linear_layer)?\.up\.weight$/, ".lora_B.weight");
  k = k.replace(/\.lora_([AB])\.[A-Za-z_][A-Za-z0-9_]*\.weight$/, ".lora_$1.weight");
  return /\.lora_[AB]\.weight$/.test(k) ? k : null;
}

/** The safetensors metadata key under which diffusers stores the peft LoraConfig (JSON). */
export const LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata";

/**
 * safetensors metadata describing the adapters as diffusers' save_lora_weights does: a JSON
 * blob under "lora_adapter_metadata" with peft LoraConfig fields prefixed by the component
 * ("unet.r", "unet.lora_alpha", "unet.target_modules"), so diffusers restores the scale.
 */
export function loraMetadata(module: Module, prefix = "unet."): Record<string, string> {
  const cfg = loraConfig(module);
  if (cfg === null) throw new Error("loraMetadata: the model has no LoRA adapters");
  const blob = {
    [`${prefix}r`]: cfg.rank,
    [`${prefix}lora_alpha`]: cfg.alpha,
    [`${prefix}target_modules`]: cfg.targets,
    [`${prefix}peft_type`]: "LORA",
    [`${prefix}bias`]: "none",
    [`${prefix}use_rslora`]: false,
    [`${prefix}use_dora`]: false,
  };
  return { format: "pt", [LORA_ADAPTER_METADATA_KEY]: JSON.stringify(blob) };
}

/** rank and alpha from safetensors metadata written by loraMetadata / diffusers / peft; null if absent. */
export function loraScaleFromMetadata(metadata: Record<string, string>, prefix = "unet."): { rank: number; alpha: number } | null {
  const raw = metadata[LORA_ADAPTER_METADATA_KEY];
  if (raw === undefined) return null;
  let blob: Record<string, unknown>;
  try {
    blob = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    throw new Error(`safetensors metadata "${LORA_ADAPTER_METADATA_KEY}" is not valid JSON`);
  }
  const rank = blob[`${prefix}r`] ?? blob["r"];
  const alpha = blob[`${prefix}lora_alpha`] ?? blob["lora_alpha"];
  if (typeof rank !== "number") return null;
  return { rank, alpha: typeof alpha === "number" ? alpha : rank };
}

/**
 * A model whose module paths also have a second, original naming (UNet2DConditionModel: the
 * original-SD / SGM names, as kohya writes SDXL LoRA) implements this; kohya keys match either.
 */
export interface OriginalModuleNames {
  originalModulePath(path: string): string | null;
}

/**
 * kohya-ss / A1111 keys (`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight`,
 * `.lora_up.weight`, `.alpha`) mapped onto this model's module paths (underscores are resolved
 * against the real paths, so names containing "_" work). Returns the peft-keyed weights and
 * the per-layer alphas.
 */
function fromKohya(module: Module, state: Map<string, Tensor>, where: string): { weights: Map<string, Tensor>; alphas: Map<string, number> } {
  const byUnderscore = new Map<string, string>();
  // a UNet also answers to its original-SD / SGM names (lora_unet_input_blocks_4_1_…, as kohya
  // writes SDXL LoRA and A1111 / ComfyUI read them)
  const names = module as Partial<OriginalModuleNames>;
  for (const [path, m] of module.namedModules()) {
    if (!(m instanceof Linear || m instanceof LoraLinear)) continue;
    byUnderscore.set(path.replace(/\./g, "_"), path);
    const original = names.originalModulePath?.(path);
    if (original) byUnderscore.set(original.replace(/\./g, "_"), path);
  }
  const weights = new Map<string, Tensor>();
  const alphas = new Map<string, number>();
  const unknown: string[] = [];
  for (const [key, t] of state) {
    const m = /^lora_unet_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$/.exec(key);
    const path = m ? byUnderscore.get(m[1]!) : undefined;
    if (!m || path === undefined) {
      unknown.push(key);
      continue;
    }
    if (m[2] === "alpha") alphas.set(path, t.item());
    else weights.set(`${path}.${m[2] === "lora_down.weight" ? "lora_A" : "lora_B"}.weight`, t);
  }
  if (unknown.length > 0) {
    const te = unknown.some((k) => k.startsWith("lora_te"));
    throw new Error(
      `${unknown.length} kohya LoRA key(s)${where} match no Linear layer of this UNet: ${unknown.join(", ")}` +
      (te ? " (lora_te* keys belong to the text encoder; strip them before loading into the UNet)" : ""),
    );
  }
  return { weights, alphas };
}

/**
 * Loads adapter weights saved by loraStateDict, diffusers, peft or kohya-ss (see normalizeLoraKey).
 * If the model has no adapters yet they are injected first: rank from the A matrices, targets
 * from the key paths, alpha from `opts.alpha` (diffusers files without metadata: alpha = rank).
 * kohya files carry one `.alpha` per layer, which is applied. Keys that match no adapter, or
 * adapters without weights, are an error listing them.
 */
export function loadLoraStateDict(module: Module, state: Map<string, Tensor>, opts: { alpha?: number; source?: string } = {}): void {
  const where = opts.source ? ` in ${opts.source}` : "";
  let normalized = new Map<string, Tensor>();
  let alphas = new Map<string, number>();
  const notLora: string[] = [];
  if ([...state.keys()].some((k) => k.startsWith("lora_unet_") || k.startsWith("lora_te"))) {
    ({ weights: normalized, alphas } = fromKohya(module, state, where));
  } else {
    for (const [key, t] of state) {
      const k = normalizeLoraKey(key);
      if (k === null) notLora.push(key);
      else normalized.set(k, t);
    }
  }
  if (notLora.length > 0) {
    throw new Error(`${notLora.length} key(s)${where} are not LoRA adapter weights: ${notLora.join(", ")}`);
  }
  if (loraLayers(module).length === 0) {
    const paths = [...normalized.keys()].filter((k) => k.endsWith(".lora_A.weight")).map((k) => k.slice(0, -".lora_A.weight".length));
    const ranks = new Set(paths.map((p) => normalized.get(`${p}.lora_A.weight`)!.shape[0]!));
    if (ranks.size !== 1) throw new Error(`LoRA weights${where} mix ranks (${[...ranks].join(", ")}); only one rank per model is supported`);
    const rank = [...ranks][0]!;
    injectLora(module, { rank, alpha: opts.alpha ?? rank, targets: paths });
  }
  const own = loraStateDict(module);
  const missing = [...own.keys()].filter((k) => !normalized.has(k));
  const unexpected = [...normalized.keys()].filter((k) => !own.has(k));
  if (missing.length > 0 || unexpected.length > 0) {
    const show = (l: string[]) => l.slice(0, 10).join(", ") + (l.length > 10 ? `, … (${l.length} in all)` : "");
    const parts = [missing.length ? `missing: ${show(missing)}` : "", unexpected.length ? `unexpected: ${show(unexpected)}` : ""].filter(Boolean);
    throw new Error(`LoRA weights${where} do not match the model's adapters (${parts.join("; ")}). Check the rank, targets and base model.`);
  }
  for (const [k, target] of own) {
    const src = normalized.get(k)!;
    if (src.shape.join(",") !== target.shape.join(",")) {
      throw new Error(`LoRA weight "${k}"${where} has shape [${src.shape.join(", ")}] but the adapter expects [${target.shape.join(", ")}] (different rank?)`);
    }
  }
  noGrad(() => {
    for (const [k, target] of own) target.copy_(normalized.get(k)!);
  });
  for (const [path, l] of loraLayers(module)) {
    const a = alphas.get(path);
    if (a !== undefined) l.alpha = a;
  }
}

/**
 * Folds every enabled adapter into its base weight (W ← W + scale·B·A) and puts the plain Linear
 * back, so the model has no adapters left and computes what it computed with them (disabled
 * adapters are dropped unmerged). Gradient
 * flags of the base weights are left as they were (frozen after injectLora). Returns the
 * number of layers merged.
 */
export function mergeLora(module: Module): number {
  return replaceAdapters(module, true);
}

/** Removes the adapters without merging (back to the base network). */
export function removeLora(module: Module): number {
  return replaceAdapters(module, false);
}

function replaceAdapters(module: Module, merge: boolean): number {
  let n = 0;
  for (const [, parent, name, m] of [...withParents(module)]) {
    if (!(m instanceof LoraLinear)) continue;
    if (merge && m.enabled) {
      noGrad(() => tidy(() => {
        m.base.weight.copy_(m.mergedWeight());
      }));
    }
    parent.replaceChild(name, m.base);
    m.lora_A.dispose();
    m.lora_B.dispose();
    n++;
  }
  return n;
}
