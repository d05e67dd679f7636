/**
 * Turning one pair into training pixels: decode both images and apply the augmentation.
 * Runs in the loader's worker threads (decodeWorker.ts) or inline; no libtorch here.
 */
import { DataError } from "./errors.js";
import { augmentPair, decodeImage, type AugmentOptions } from "./images.js";
import { Rng } from "./random.js";
import type { ImageSource, SkipReason } from "./types.js";

export interface PrepareTask {
  id: number;
  chosen: ImageSource;
  rejected: ImageSource;
  source: string;
  row: number;
  chosenField: string;
  rejectedField: string;
  /** Seed of this pair's augmentation (derived from the loader seed, epoch and position). */
  seed: number;
  augment: AugmentOptions;
}

export type PrepareResult =
  | { id: number; ok: true; pixels: Float32Array }
  | { id: number; ok: false; error: { reason: SkipReason; source: string; row: number | null; field: string | null; message: string } | { message: string } };

/** Chosen then rejected image, each 3·res² floats in CHW layout, in one Float32Array. */
export async function preparePair(t: PrepareTask): Promise<Float32Array> {
  const [c, r] = await Promise.all([
    decodeImage(t.chosen, { source: t.source, row: t.row, field: t.chosenField }),
    decodeImage(t.rejected, { source: t.source, row: t.row, field: t.rejectedField }),
  ]);
  const n = 3 * t.augment.resolution * t.augment.resolution;
  const out = new Float32Array(2 * n);
  await augmentPair(c, r, t.augment, new Rng(t.seed), out, 0, n);
  return out;
}

export async function runTask(t: PrepareTask): Promise<PrepareResult> {
  try {
    return { id: t.id, ok: true, pixels: await preparePair(t) };
  } catch (e) {
    if (e instanceof DataError) {
      // DataError's message already contains the location; keep the parts to rebuild it
      return { id: t.id, ok: false, error: { reason: e.reason, source: e.source, row: e.row, field: e.field, message: e.message } };
    }
    return { id: t.id, ok: false, error: { message: (e as Error).stack ?? String(e) } };
  }
}

/** Rebuilds the error sent back by a worker. */
export function resultError(r: Extract<PrepareResult, { ok: false }>): Error {
  const e = r.error;
  if ("reason" in e) {
    const err = new DataError(e.reason, e.source, e.row, e.field, "");
    Object.defineProperty(err, "message", { value: e.message });
    return err;
  }
  return new Error(`image worker failed: ${e.message}`);
}
