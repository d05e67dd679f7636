// open_clip state dicts (e.g. HPSv2's ViT-H-14 checkpoint) → our ClipModel, which uses
// transformers' CLIPModel names. The mapping (as transformers' convert_clip_original_pytorch_to_hf):
//
//   visual.conv1.weight                 → vision_model.embeddings.patch_embedding.weight
//   visual.class_embedding              → vision_model.embeddings.class_embedding
//   visual.positional_embedding         → vision_model.embeddings.position_embedding.weight
//   visual.ln_pre / visual.ln_post      → vision_model.pre_layrnorm / vision_model.post_layernorm
//   visual.proj [D, P]                  → visual_projection.weight [P, D]   (transposed: x @ proj)
//   token_embedding / positional_embedding → text_model.embeddings.token_embedding / position_embedding
//   ln_final                            → text_model.final_layer_norm
//   text_projection [D, P]              → text_projection.weight [P, D]     (transposed)
//   logit_scale                         → logit_scale
//   (visual.)transformer.resblocks.N.   → (vision|text)_model.encoder.layers.N.
//       attn.in_proj_weight/bias [3D…]  → self_attn.{q,k,v}_proj.weight/bias (stacked q, k, v)
//       attn.out_proj                   → self_attn.out_proj
//       ln_1 / ln_2                     → layer_norm1 / layer_norm2
//       mlp.c_fc / mlp.c_proj           → mlp.fc1 / mlp.fc2
//   attn_mask (a buffer some versions saved) is dropped.
//
// Shapes give every size but the head counts; those come from open_clip's model config
// (open_clip_config.json → model_cfg, or a named architecture below). open_clip pools the text at
// argmax(ids) (the end token has the largest id), so the converted text config uses eos_token_id 2,
// transformers' legacy argmax rule; its tokenizer pads with 0.
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { z } from "zod";
import { readSafetensorsSync } from "../../io/safetensors.js";
import type { Tensor } from "../../tensor/index.js";
import { ClipModel, type ClipConfig } from "./clip-model.js";
import { DEFAULT_CLIP_TEXT_CONFIG } from "./text-model.js";
import { DEFAULT_CLIP_VISION_CONFIG } from "./vision-model.js";
import { squareProcessorConfig, type ClipImageProcessorConfig } from "./image-processor.js";
import { readTorchCheckpoint } from "./torch-checkpoint.js";

/** torch.save files (zip format) read by readTorchCheckpoint. */
export const TORCH_CHECKPOINT_EXTENSIONS = [".pt", ".pth", ".bin", ".ckpt"];
const isTorchFile = (f: string) => TORCH_CHECKPOINT_EXTENSIONS.some((e) => f.endsWith(e));

/** The part of open_clip's model config the conversion needs (open_clip's names). */
export interface OpenClipModelConfig {
  quickGelu: boolean;
  /** Vision attention heads = width / headWidth (open_clip's head_width, default 64). */
  visionHeadWidth: number;
  /** Text attention heads (open_clip's text_cfg.heads, default 8). */
  textHeads: number;
}

/** open_clip's model_configs/*.json for the common ViTs (head counts; sizes come from the weights). */
export const OPEN_CLIP_ARCHITECTURES: Record<string, OpenClipModelConfig> = {
  "ViT-B-32": { quickGelu: false, visionHeadWidth: 64, textHeads: 8 },
  "ViT-B-16": { quickGelu: false, visionHeadWidth: 64, textHeads: 8 },
  "ViT-L-14": { quickGelu: false, visionHeadWidth: 64, textHeads: 12 },
  "ViT-H-14": { quickGelu: false, visionHeadWidth: 80, textHeads: 16 },
  "ViT-g-14": { quickGelu: false, visionHeadWidth: 88, textHeads: 16 },
  "ViT-bigG-14": { quickGelu: false, visionHeadWidth: 104, textHeads: 20 },
};

/** A named architecture; a "-quickgelu" suffix (open_clip's OpenAI-weight variants) sets quickGelu. */
export function openClipArchitecture(name: string): OpenClipModelConfig {
  const quick = name.endsWith("-quickgelu");
  const base = OPEN_CLIP_ARCHITECTURES[quick ? name.slice(0, -"-quickgelu".length) : name];
  if (!base) throw new Error(`unknown open_clip architecture "${name}" (known: ${Object.keys(OPEN_CLIP_ARCHITECTURES).join(", ")}, each optionally with -quickgelu); or put open_clip_config.json beside the weights`);
  return { ...base, quickGelu: base.quickGelu || quick };
}

const openClipConfigJson = z.looseObject({
  model_cfg: z.looseObject({
    embed_dim: z.number().int().positive().optional(),
    quick_gelu: z.boolean().optional(),
    vision_cfg: z.looseObject({ head_width: z.number().int().positive().optional() }).optional(),
    text_cfg: z.looseObject({ heads: z.number().int().positive().optional(), hf_model_name: z.string().optional() }).optional(),
  }),
  preprocess_cfg: z.looseObject({
    mean: z.array(z.number()).length(3).optional(),
    std: z.array(z.number()).length(3).optional(),
    interpolation: z.string().optional(),
    resize_mode: z.string().optional(),
  }).optional(),
});

export interface OpenClipFileConfig {
  model: OpenClipModelConfig;
  mean?: [number, number, number];
  std?: [number, number, number];
}

/** Reads open_clip_config.json (as open_clip's hub repos ship it); open_clip's defaults fill gaps. */
export function readOpenClipConfig(path: string): OpenClipFileConfig {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
  const parsed = openClipConfigJson.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new Error(`${path}: not an open_clip config (${issues}); expected {"model_cfg": {"vision_cfg": …, "text_cfg": …}}`);
  }
  const m = parsed.data.model_cfg;
  if (m.text_cfg?.hf_model_name) throw new Error(`${path}: text_cfg.hf_model_name (a Hugging Face text tower) is not supported; only open_clip's own CLIP text transformer`);
  const p = parsed.data.preprocess_cfg;
  if (p?.interpolation !== undefined && p.interpolation !== "bicubic") throw new Error(`${path}: preprocess_cfg.interpolation "${p.interpolation}" is not supported (bicubic only)`);
  if (p?.resize_mode !== undefined && p.resize_mode !== "shortest") throw new Error(`${path}: preprocess_cfg.resize_mode "${p.resize_mode}" is not supported ("shortest" only)`);
  return {
    model: { quickGelu: m.quick_gelu ?? false, visionHeadWidth: m.vision_cfg?.head_width ?? 64, textHeads: m.text_cfg?.heads ?? 8 },
    ...(p?.mean ? { mean: p.mean as [number, number, number] } : {}),
    ...(p?.std ? { std: p.std as [number, number, number] } : {}),
  };
}

/** The open_clip keys a CLIP state dict must hold (N = each layer). */
export const OPEN_CLIP_EXPECTED_KEYS = [
  "visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.{weight,bias}",
  "visual.transformer.resblocks.N.{ln_1,ln_2}.{weight,bias}", "visual.transformer.resblocks.N.attn.{in_proj_weight,in_proj_bias}",
  "visual.transformer.resblocks.N.attn.out_proj.{weight,bias}", "visual.transformer.resblocks.N.mlp.{c_fc,c_proj}.{weight,bias}",
  "visual.ln_post.{weight,bias}", "visual.proj", "token_embedding.weight", "positional_embedding",
  "transformer.resblocks.N.… (as visual)", "ln_final.{weight,bias}", "text_projection", "logit_scale",
];

function layerCount(keys: Iterable<string>, prefix: string): number {
  let n = 0;
  const re = new RegExp(`^${prefix.replace(/\./g, "\\.")}(\\d+)\\.`);
  for (const k of keys) {
    const m = re.exec(k);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

/** Strips a "module." (DataParallel) or "state_dict." prefix every key shares. */
function stripPrefix(state: Map<string, Tensor>): Map<string, Tensor> {
  for (const prefix of ["module.", "state_dict.", "model."]) {
    if (state.size > 0 && [...state.keys()].every((k) => k.startsWith(prefix))) {
      return new Map([...state].map(([k, v]) => [k.slice(prefix.length), v]));
    }
  }
  return state;
}

/**
 * Converts an open_clip CLIP state dict to ClipModel names and derives the ClipConfig. The returned
 * tensors are new (transposes and q/k/v splits) or the inputs themselves; the caller disposes both
 * maps' tensors when done (`disposeConverted`).
 */
export function openClipToClip(input: Map<string, Tensor>, arch: OpenClipModelConfig, source = "open_clip state dict"): { state: Map<string, Tensor>; config: ClipConfig } {
  const state = stripPrefix(input);
  const need = (k: string): Tensor => {
    const t = state.get(k);
    if (t === undefined) {
      throw new Error(`${source}: no "${k}"; this is not an open_clip CLIP state dict (expected keys ${OPEN_CLIP_EXPECTED_KEYS.join(", ")}; it holds ${[...state.keys()].slice(0, 8).join(", ")}${state.size > 8 ? ", …" : ""})`);
    }
    return t;
  };
  const conv1 = need("visual.conv1.weight");
  const [vWidth, channels, patch] = conv1.shape as [number, number, number, number];
  const vPositions = need("visual.positional_embedding").shape[0]!;
  const grid = Math.round(Math.sqrt(vPositions - 1));
  if (grid * grid !== vPositions - 1) throw new Error(`${source}: visual.positional_embedding has ${vPositions} rows, not 1 + a square number of patches`);
  const vLayers = layerCount(state.keys(), "visual.transformer.resblocks.");
  const tLayers = layerCount(state.keys(), "transformer.resblocks.");
  if (vLayers === 0 || tLayers === 0) throw new Error(`${source}: no ${vLayers === 0 ? "visual." : ""}transformer.resblocks.N.* layers (expected keys ${OPEN_CLIP_EXPECTED_KEYS.join(", ")})`);
  const [vocab, tWidth] = need("token_embedding.weight").shape as [number, number];
  const context = need("positional_embedding").shape[0]!;
  const proj = need("visual.proj");
  const embedDim = proj.shape[1]!;
  if (vWidth % arch.visionHeadWidth !== 0) throw new Error(`${source}: vision width ${vWidth} is not a multiple of head_width ${arch.visionHeadWidth} (check the architecture / open_clip_config.json)`);
  if (tWidth % arch.textHeads !== 0) throw new Error(`${source}: text width ${tWidth} is not divisible by ${arch.textHeads} heads (check the architecture / open_clip_config.json)`);
  const act = arch.quickGelu ? "quick_gelu" as const : "gelu" as const;
  const config: ClipConfig = {
    text: {
      ...DEFAULT_CLIP_TEXT_CONFIG,
      vocabSize: vocab, hiddenSize: tWidth, intermediateSize: need("transformer.resblocks.0.mlp.c_fc.weight").shape[0]!,
      numHiddenLayers: tLayers, numAttentionHeads: arch.textHeads, maxPositionEmbeddings: context, hiddenAct: act,
      projectionDim: embedDim, eosTokenId: 2, bosTokenId: 49406, padTokenId: 0,
    },
    vision: {
      ...DEFAULT_CLIP_VISION_CONFIG,
      hiddenSize: vWidth, intermediateSize: need("visual.transformer.resblocks.0.mlp.c_fc.weight").shape[0]!,
      numHiddenLayers: vLayers, numAttentionHeads: vWidth / arch.visionHeadWidth, numChannels: channels,
      imageSize: grid * patch, patchSize: patch, hiddenAct: act, projectionDim: embedDim,
    },
    projectionDim: embedDim,
    logitScaleInitValue: Math.log(1 / 0.07),
  };

  const out = new Map<string, Tensor>();
  const used = new Set<string>();
  const take = (from: string, to: string, transform?: (t: Tensor) => Tensor) => {
    const t = need(from);
    used.add(from);
    out.set(to, transform ? transform(t) : t);
  };
  const transpose = (t: Tensor) => t.transpose(0, 1).contiguous();
  const layers = (from: string, to: string, n: number, width: number) => {
    for (let i = 0; i < n; i++) {
      const a = `${from}${i}.`, b = `${to}${i}.`;
      for (const [x, y] of [["ln_1", "layer_norm1"], ["ln_2", "layer_norm2"], ["mlp.c_fc", "mlp.fc1"], ["mlp.c_proj", "mlp.fc2"], ["attn.out_proj", "self_attn.out_proj"]]) {
        take(`${a}${x}.weight`, `${b}${y}.weight`);
        take(`${a}${x}.bias`, `${b}${y}.bias`);
      }
      for (const [kind, suffix] of [["in_proj_weight", "weight"], ["in_proj_bias", "bias"]] as const) {
        const key = `${a}attn.${kind}`;
        const packed = need(key);
        used.add(key);
        if (packed.shape[0] !== 3 * width) throw new Error(`${source}: ${key} has ${packed.shape[0]} rows, expected 3 × ${width} (q, k, v stacked)`);
        ["q", "k", "v"].forEach((name, j) => out.set(`${b}self_attn.${name}_proj.${suffix}`, packed.slice(0, j * width, (j + 1) * width).contiguous()));
      }
    }
  };
  take("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight");
  take("visual.class_embedding", "vision_model.embeddings.class_embedding");
  take("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight");
  take("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight");
  take("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias");
  layers("visual.transformer.resblocks.", "vision_model.encoder.layers.", vLayers, vWidth);
  take("visual.ln_post.weight", "vision_model.post_layernorm.weight");
  take("visual.ln_post.bias", "vision_model.post_layernorm.bias");
  take("visual.proj", "visual_projection.weight", transpose);
  take("token_embedding.weight", "text_model.embeddings.token_embedding.weight");
  take("positional_embedding", "text_model.embeddings.position_embedding.weight");
  layers("transformer.resblocks.", "text_model.encoder.layers.", tLayers, tWidth);
  take("ln_final.weight", "text_model.final_layer_norm.weight");
  take("ln_final.bias", "text_model.final_layer_norm.bias");
  take("text_projection", "text_projection.weight", transpose);
  take("logit_scale", "logit_scale", (t) => t.reshape([]));
  const ignorable = (k: string) => k === "attn_mask" || k.endsWith(".attn_mask");
  const unknown = [...state.keys()].filter((k) => !used.has(k) && !ignorable(k));
  if (unknown.length > 0) {
    const inputs = new Set(state.values());
    for (const t of out.values()) if (!inputs.has(t)) t.dispose();
    throw new Error(`${source}: keys an open_clip ViT CLIP does not have: ${unknown.slice(0, 12).join(", ")}${unknown.length > 12 ? ", …" : ""} (supported: the plain ViT CLIP of open_clip; expected ${OPEN_CLIP_EXPECTED_KEYS.join(", ")})`);
  }
  return { state: out, config };
}

export interface LoadedOpenClip {
  model: ClipModel;
  /** open_clip's val transform as a CLIPImageProcessor config (Resize + CenterCrop at the model size). */
  processor: ClipImageProcessorConfig;
  weightsPath: string;
}

/**
 * Loads an open_clip checkpoint: a .safetensors or torch.save file (HPS_v2_compressed.pt: its
 * `state_dict` is used), or a folder holding one (open_clip_model.safetensors, or the only one). Head counts come from
 * open_clip_config.json beside it when present, else from `architecture` (default ViT-H-14).
 */
export function loadOpenClipModel(path: string, opts: { architecture?: string } = {}): LoadedOpenClip {
  if (!existsSync(path)) throw new Error(`${path}: not found (an open_clip checkpoint as .safetensors, or a folder holding one)`);
  let file = path;
  if (statSync(path).isDirectory()) {
    const files = readdirSync(path);
    const candidates = files.filter((f) => f.endsWith(".safetensors"));
    const torchFiles = files.filter(isTorchFile);
    const preferred = ["open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin"].find((f) => files.includes(f));
    if (preferred) file = join(path, preferred);
    else if (candidates.length === 1) file = join(path, candidates[0]!);
    else if (candidates.length === 0 && torchFiles.length === 1) file = join(path, torchFiles[0]!);
    else throw new Error(`${path}: expected one open_clip checkpoint (.safetensors, or a torch.save .pt / .pth / .bin), found ${candidates.length + torchFiles.length === 0 ? "none" : [...candidates, ...torchFiles].join(", ")}`);
  }
  const cfgPath = join(dirname(file), "open_clip_config.json");
  const fileCfg = existsSync(cfgPath) ? readOpenClipConfig(cfgPath) : null;
  const arch = fileCfg?.model ?? openClipArchitecture(opts.architecture ?? "ViT-H-14");
  const tensors = isTorchFile(file) ? readTorchCheckpoint(file).tensors : readSafetensorsSync(file).tensors;
  let converted: Map<string, Tensor> | null = null;
  try {
    const r = openClipToClip(tensors, arch, file);
    converted = r.state;
    const model = new ClipModel(r.config);
    try {
      model.loadStateDict(converted, { source: `${file} (converted from open_clip names)` });
    } catch (err) {
      model.dispose();
      throw err;
    }
    model.requiresGrad(false);
    model.eval();
    const processor = squareProcessorConfig(r.config.vision.imageSize, fileCfg?.mean, fileCfg?.std);
    return { model, processor, weightsPath: file };
  } finally {
    const originals = new Set(tensors.values());
    if (converted) for (const t of converted.values()) if (!originals.has(t)) t.dispose();
    for (const t of originals) t.dispose();
  }
}
