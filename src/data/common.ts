/** Helpers shared by the readers. */
import { DataError } from "./errors.js";
import { decodeImage } from "./images.js";
import type { ImageSource, RowResult, SkipReason } from "./types.js";

export function badRow(reason: SkipReason, source: string, row: number | null, field: string | null, detail: string): RowResult {
  return { kind: "error", error: new DataError(reason, source, row, field, detail) };
}

/** Decodes both images of a pair; returns the DataError of the first bad one, or null. */
export async function checkPairImages(
  source: string,
  row: number,
  a: { img: ImageSource; field: string },
  b: { img: ImageSource; field: string },
): Promise<RowResult | null> {
  try {
    await decodeImage(a.img, { source, row, field: a.field });
    await decodeImage(b.img, { source, row, field: b.field });
    return null;
  } catch (e) {
    if (e instanceof DataError) return { kind: "error", error: e };
    throw e;
  }
}

/** Labels in Pick-a-Pic form → which image won; null for a tie; a detail string when invalid. */
export function parseLabels(l0: unknown, l1: unknown): { first: boolean | null } | { error: string; field: string; reason: SkipReason } {
  for (const [v, field] of [[l0, "label_0"], [l1, "label_1"]] as const) {
    if (typeof v !== "number") return { error: `expected a number label, got ${v === null ? "null" : typeof v}`, field, reason: "wrong-type" };
    if (v !== 0 && v !== 0.5 && v !== 1) return { error: `label ${v} is not one of 0, 0.5, 1`, field, reason: "bad-label" };
  }
  const a = l0 as number;
  const b = l1 as number;
  if (a + b !== 1) return { error: `labels (${a}, ${b}) must be (1, 0), (0, 1) or (0.5, 0.5)`, field: "label_1", reason: "bad-label" };
  return { first: a === 0.5 ? null : a === 1 };
}
