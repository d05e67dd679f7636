// UNet parameter names: diffusers' UNet2DConditionModel ↔ the original Stable Diffusion / SGM
// (ldm openaimodel) UNet, as single-file checkpoints (`model.diffusion_model.…`), kohya LoRA keys
// (`lora_unet_input_blocks_…`), AUTOMATIC1111 and ComfyUI name them.
//
// The original UNet is a flat list of blocks:
//   input_blocks.0.0                conv_in
//   input_blocks.N.0 / .N.1         a resnet / its transformer (N counts resnets and downsamplers)
//   input_blocks.N.0.op             a downsampler
//   middle_block.0 / .1 / .2        resnet, transformer, resnet
//   output_blocks.N.0 / .N.1        a resnet / its transformer; the block's upsampler is the next
//                                   sub-index (N.1.conv without a transformer, N.2.conv with one)
//   time_embed.0/.2, label_emb.0.0/.0.2 (SDXL's add_embedding), out.0 / out.2 (norm, conv_out)
// Inside a resnet: in_layers.0 = norm1, in_layers.2 = conv1, emb_layers.1 = time_emb_proj,
// out_layers.0 = norm2, out_layers.3 = conv2, skip_connection = conv_shortcut. Inside a
// transformer the names are diffusers' own (proj_in, transformer_blocks.K.attn1.to_q, …).
//
// The block numbering depends only on the block layout (which blocks have attention, resnets per
// block), which comes from the diffusers config.json — not from our UNet class, so the same
// tables serve SD1.x, SD2.x and SDXL configs this toolkit cannot build yet.
import { DIFFUSERS_UNET_DEFAULTS } from "../unet/config.js";

export interface UNetBlockLayout {
  /** Per down block (diffusers order): resnets, whether each resnet has a transformer, whether a downsampler follows. */
  down: { resnets: number; attention: boolean; downsample: boolean }[];
  /** null: no middle block. */
  mid: { attention: boolean } | null;
  /** Per up block (diffusers order: deepest first). */
  up: { resnets: number; attention: boolean; upsample: boolean }[];
}

export class NameTableError extends Error {
  override readonly name = "NameTableError";
}

const DOWN_TYPES: Record<string, boolean> = { CrossAttnDownBlock2D: true, DownBlock2D: false };
const UP_TYPES: Record<string, boolean> = { CrossAttnUpBlock2D: true, UpBlock2D: false };
const MID_TYPES: Record<string, boolean> = { UNetMidBlock2DCrossAttn: true };

function stringList(v: unknown, key: string, source: string): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw new NameTableError(`${source}: "${key}" must be a list of block type names`);
  return v as string[];
}

/**
 * The block layout of a diffusers UNet config.json object (snake_case; missing keys take
 * diffusers' defaults). Only the keys that decide the numbering are read.
 */
export function unetLayoutFromConfig(json: Record<string, unknown>, source = "unet config"): UNetBlockLayout {
  const downTypes = stringList(json.down_block_types ?? DIFFUSERS_UNET_DEFAULTS.downBlockTypes, "down_block_types", source);
  const upTypes = stringList(json.up_block_types ?? DIFFUSERS_UNET_DEFAULTS.upBlockTypes, "up_block_types", source);
  const midType = json.mid_block_type === undefined ? DIFFUSERS_UNET_DEFAULTS.midBlockType : json.mid_block_type;
  const lpbRaw = json.layers_per_block ?? DIFFUSERS_UNET_DEFAULTS.layersPerBlock;
  const n = downTypes.length;
  if (upTypes.length !== n) throw new NameTableError(`${source}: ${n} down blocks but ${upTypes.length} up blocks`);
  const lpb = typeof lpbRaw === "number" ? Array.from({ length: n }, () => lpbRaw) : lpbRaw;
  if (!Array.isArray(lpb) || lpb.length !== n || !lpb.every((x) => Number.isInteger(x) && (x as number) > 0)) {
    throw new NameTableError(`${source}: layers_per_block must be a positive integer or one per block, got ${JSON.stringify(lpbRaw)}`);
  }
  const perBlock = lpb as number[];
  const reversed = [...perBlock].reverse();
  const down = downTypes.map((t, i) => {
    const attention = DOWN_TYPES[t];
    if (attention === undefined) throw new NameTableError(`${source}: down block type "${t}" has no original-SD naming here (known: ${Object.keys(DOWN_TYPES).join(", ")})`);
    return { resnets: perBlock[i]!, attention, downsample: i < n - 1 };
  });
  const up = upTypes.map((t, i) => {
    const attention = UP_TYPES[t];
    if (attention === undefined) throw new NameTableError(`${source}: up block type "${t}" has no original-SD naming here (known: ${Object.keys(UP_TYPES).join(", ")})`);
    return { resnets: reversed[i]! + 1, attention, upsample: i < n - 1 };
  });
  let mid: UNetBlockLayout["mid"] = null;
  if (midType !== null) {
    const attention = MID_TYPES[String(midType)];
    if (attention === undefined) throw new NameTableError(`${source}: mid block type "${String(midType)}" has no original-SD naming here`);
    mid = { attention };
  }
  return { down, mid, up };
}

type PrefixKind = "plain" | "resnet";
interface PrefixEntry { diffusers: string; original: string; kind: PrefixKind }

/** diffusers resnet sub-module → original, for the first segment(s) after `resnets.J`. */
const RESNET_PARTS: [string, string][] = [
  ["norm1", "in_layers.0"], ["conv1", "in_layers.2"], ["time_emb_proj", "emb_layers.1"],
  ["norm2", "out_layers.0"], ["conv2", "out_layers.3"], ["conv_shortcut", "skip_connection"],
];

/** Every block prefix of the layout, both spellings. */
export function unetPrefixTable(layout: UNetBlockLayout): PrefixEntry[] {
  const out: PrefixEntry[] = [
    { diffusers: "time_embedding.linear_1", original: "time_embed.0", kind: "plain" },
    { diffusers: "time_embedding.linear_2", original: "time_embed.2", kind: "plain" },
    { diffusers: "add_embedding.linear_1", original: "label_emb.0.0", kind: "plain" },
    { diffusers: "add_embedding.linear_2", original: "label_emb.0.2", kind: "plain" },
    { diffusers: "conv_in", original: "input_blocks.0.0", kind: "plain" },
    { diffusers: "conv_norm_out", original: "out.0", kind: "plain" },
    { diffusers: "conv_out", original: "out.2", kind: "plain" },
  ];
  let n = 1;
  layout.down.forEach((b, i) => {
    for (let j = 0; j < b.resnets; j++, n++) {
      out.push({ diffusers: `down_blocks.${i}.resnets.${j}`, original: `input_blocks.${n}.0`, kind: "resnet" });
      if (b.attention) out.push({ diffusers: `down_blocks.${i}.attentions.${j}`, original: `input_blocks.${n}.1`, kind: "plain" });
    }
    if (b.downsample) {
      out.push({ diffusers: `down_blocks.${i}.downsamplers.0.conv`, original: `input_blocks.${n}.0.op`, kind: "plain" });
      n++;
    }
  });
  if (layout.mid) {
    out.push({ diffusers: "mid_block.resnets.0", original: "middle_block.0", kind: "resnet" });
    if (layout.mid.attention) {
      out.push({ diffusers: "mid_block.attentions.0", original: "middle_block.1", kind: "plain" });
      out.push({ diffusers: "mid_block.resnets.1", original: "middle_block.2", kind: "resnet" });
    } else {
      out.push({ diffusers: "mid_block.resnets.1", original: "middle_block.1", kind: "resnet" });
    }
  }
  n = 0;
  layout.up.forEach((b, i) => {
    for (let j = 0; j < b.resnets; j++, n++) {
      out.push({ diffusers: `up_blocks.${i}.resnets.${j}`, original: `output_blocks.${n}.0`, kind: "resnet" });
      if (b.attention) out.push({ diffusers: `up_blocks.${i}.attentions.${j}`, original: `output_blocks.${n}.1`, kind: "plain" });
      if (b.upsample && j === b.resnets - 1) {
        out.push({ diffusers: `up_blocks.${i}.upsamplers.0.conv`, original: `output_blocks.${n}.${b.attention ? 2 : 1}.conv`, kind: "plain" });
      }
    }
  });
  return out;
}

function splitPrefix(name: string, prefix: string): string | null {
  if (name === prefix) return "";
  return name.startsWith(`${prefix}.`) ? name.slice(prefix.length + 1) : null;
}

function renameRest(rest: string, kind: PrefixKind, toOriginal: boolean): string | null {
  if (kind === "plain" || rest === "") return rest;
  for (const [d, o] of RESNET_PARTS) {
    const [from, to] = toOriginal ? [d, o] : [o, d];
    const tail = splitPrefix(rest, from);
    if (tail !== null) return tail === "" ? to : `${to}.${tail}`;
  }
  return null; // a name inside a resnet that neither spelling has
}

/**
 * Maps one name (a parameter name or a module path) between the spellings; null when no block
 * of the layout holds it. Longest prefix wins, so nested prefixes cannot capture each other.
 */
export class UNetNameMapper {
  readonly #byDiffusers: PrefixEntry[];
  readonly #byOriginal: PrefixEntry[];

  constructor(readonly layout: UNetBlockLayout) {
    const table = unetPrefixTable(layout);
    this.#byDiffusers = [...table].sort((a, b) => b.diffusers.length - a.diffusers.length);
    this.#byOriginal = [...table].sort((a, b) => b.original.length - a.original.length);
  }

  toOriginal(name: string): string | null {
    return this.#map(name, true);
  }

  toDiffusers(name: string): string | null {
    return this.#map(name, false);
  }

  #map(name: string, toOriginal: boolean): string | null {
    for (const e of toOriginal ? this.#byDiffusers : this.#byOriginal) {
      const rest = splitPrefix(name, toOriginal ? e.diffusers : e.original);
      if (rest === null) continue;
      const renamed = renameRest(rest, e.kind, toOriginal);
      if (renamed === null) return null;
      const head = toOriginal ? e.original : e.diffusers;
      return renamed === "" ? head : `${head}.${renamed}`;
    }
    return null;
  }
}

export interface NameTable {
  /** diffusers name → original name, for every name given. */
  toOriginal: Map<string, string>;
  /** original name → diffusers name (the inverse). */
  toDiffusers: Map<string, string>;
}

/**
 * The full table for a list of diffusers UNet parameter names (e.g. a safetensors header or
 * describeParameters): every name must map to exactly one original name and back, else a
 * NameTableError lists the names that do not.
 */
export function unetNameTable(layout: UNetBlockLayout, diffusersNames: Iterable<string>, source = "UNet"): NameTable {
  const mapper = new UNetNameMapper(layout);
  const toOriginal = new Map<string, string>();
  const toDiffusers = new Map<string, string>();
  const unmapped: string[] = [];
  const clashes: string[] = [];
  for (const name of diffusersNames) {
    const original = mapper.toOriginal(name);
    if (original === null || mapper.toDiffusers(original) !== name) {
      unmapped.push(name);
      continue;
    }
    const before = toDiffusers.get(original);
    if (before !== undefined) clashes.push(`${before} and ${name} → ${original}`);
    toOriginal.set(name, original);
    toDiffusers.set(original, name);
  }
  if (unmapped.length > 0 || clashes.length > 0) {
    const show = (l: string[]) => l.slice(0, 12).join(", ") + (l.length > 12 ? `, … (${l.length} in all)` : "");
    throw new NameTableError(
      `${source}: ${unmapped.length ? `names with no original-SD spelling for this block layout: ${show(unmapped)}` : ""}` +
        `${unmapped.length && clashes.length ? "; " : ""}${clashes.length ? `names that collide: ${show(clashes)}` : ""}. ` +
        "Check that the config.json matches the weights.",
    );
  }
  return { toOriginal, toDiffusers };
}
