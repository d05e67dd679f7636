// SDXL's extra UNet conditioning (diffusers' `added_cond_kwargs`): the pooled text embedding of
// the second text encoder (`text_embeds` [N, P]) and the micro-conditioning `time_ids` [N, T]
// (SDXL base: original size (h, w), crop top-left (top, left), target size (h, w), T = 6).
//
// The trainer, the samplers and classifier-free guidance move a conditioning tensor around by its
// batch axis only (cat, chunk, indexSelect, expand). So that they carry SDXL's conditioning
// without knowing about it, it travels PACKED into the text conditioning as extra rows:
//
//   packed [N, L + R, D] = cat([hidden [N, L, D], extra [N, R, D]], 1)
//   extra (one row of R·D values per sample) = [timeIds (T), textEmbeds (P), 0 …, T, P, R]
//
// The last three values say how to read it back (R = ceil((T + P + 3) / D)), so a UNet with
// addition_embed_type "text_time" unpacks it without outside knowledge and checks that
// P + T·addition_time_embed_dim matches its add_embedding. Keep packed tensors in float32
// (bfloat16 would round sizes such as 1016). The structured form is AddedConditioning; the UNet's
// forward also takes it directly.
import { cat, tensor, tidy, type Tensor } from "../../tensor/index.js";

export interface AddedConditioning {
  /** The pooled (projected) text embedding [N, P]. */
  textEmbeds: Tensor;
  /** Micro-conditioning [N, T]: original size, crop top-left, target size (SDXL base). */
  timeIds: Tensor;
}

/** One image's micro-conditioning, in pixels; diffusers' `_get_add_time_ids` order. */
export interface MicroConditioning {
  originalSize: [number, number];
  cropTopLeft: [number, number];
  targetSize: [number, number];
}

/** [h, w, top, left, h', w'] as diffusers' pipeline and training scripts build add_time_ids. */
export function timeIdsOf(m: MicroConditioning): number[] {
  return [...m.originalSize, ...m.cropTopLeft, ...m.targetSize];
}

/** The pipeline default: original = target = (height, width), no crop. */
export function defaultMicroConditioning(height: number, width: number): MicroConditioning {
  return { originalSize: [height, width], cropTopLeft: [0, 0], targetSize: [height, width] };
}

const HEADER = 3;

/** Packs `added` into extra rows after `hidden` (see the file comment). */
export function packConditioning(hidden: Tensor, added: AddedConditioning): Tensor {
  if (hidden.ndim !== 3) throw new Error(`packConditioning: hidden must be [N, L, D], got [${hidden.shape.join(", ")}]`);
  const [n, , d] = hidden.shape as [number, number, number];
  const { textEmbeds, timeIds } = added;
  if (textEmbeds.ndim !== 2 || textEmbeds.shape[0] !== n) throw new Error(`packConditioning: textEmbeds must be [${n}, P], got [${textEmbeds.shape.join(", ")}]`);
  if (timeIds.ndim !== 2 || timeIds.shape[0] !== n) throw new Error(`packConditioning: timeIds must be [${n}, T], got [${timeIds.shape.join(", ")}]`);
  const p = textEmbeds.shape[1]!;
  const t = timeIds.shape[1]!;
  const rows = Math.ceil((t + p + HEADER) / d);
  const pad = rows * d - (t + p + HEADER);
  return tidy(() => {
    const device = hidden.device;
    const header = tensor(new Float32Array([t, p, rows]), [1, HEADER], { device }).expand([n, HEADER]);
    const parts = [timeIds.to(hidden.dtype), textEmbeds.to(hidden.dtype)];
    if (pad > 0) parts.push(tensor(new Float32Array(pad), [1, pad], { device }).to(hidden.dtype).expand([n, pad]));
    parts.push(header.to(hidden.dtype));
    const extra = cat(parts, 1).reshape([n, rows, d]);
    return cat([hidden, extra], 1);
  });
}

/** Reads the layout from the last values of a packed tensor; null when `cond` is not packed. */
export function packedLayout(cond: Tensor): { timeIds: number; textEmbeds: number; rows: number } | null {
  if (cond.ndim !== 3) return null;
  const [, l, d] = cond.shape as [number, number, number];
  const tail = tidy(() => cond.slice(0, 0, 1).reshape([l * d]).slice(0, l * d - HEADER, l * d).to("f32").toArray());
  const [t, p, rows] = tail as [number, number, number];
  const isCount = (x: number) => Number.isInteger(x) && x > 0;
  if (!isCount(t) || !isCount(p) || !isCount(rows) || rows >= l || Math.ceil((t + p + HEADER) / d) !== rows) return null;
  return { timeIds: t, textEmbeds: p, rows };
}

/** Splits a packed conditioning back into the text states and the added conditioning (null: not packed). */
export function unpackConditioning(cond: Tensor): { hidden: Tensor; added: AddedConditioning } | null {
  const layout = packedLayout(cond);
  if (layout === null) return null;
  const [n, l, d] = cond.shape as [number, number, number];
  const { timeIds: t, textEmbeds: p, rows } = layout;
  const hidden = cond.slice(1, 0, l - rows);
  const extra = cond.slice(1, l - rows, l).reshape([n, rows * d]);
  return { hidden, added: { timeIds: extra.slice(1, 0, t), textEmbeds: extra.slice(1, t, t + p) } };
}
