/**
 * Turning one pair into training pixels: decode both images and apply the augmentation.
 * Runs in the loader's worker threads (decodeWorker.ts) or inline; no libtorch here.
 */
import { DataError } from "./errors.js";
import { augmentPair, decodeImage, type AugmentOptions, type PairGeometry } from "./images.js";
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
  | { id: number; ok: true; pixels: Float32Array; geometry: PairGeometry }
  | { id: number; ok: false; error: { reason: SkipReason; source: string; row: number | null; field: string | null; message: string } | { message: string } };

/** Chosen then rejected image, each 3·res² floats in CHW layout, in one Float32Array. */
export async function preparePair(t: PrepareTask): Promise<Float32Array> {
  return (await preparePairWithGeometry(t)).pixels;
}

/** preparePair and the augmentation's geometry (SDXL's original size and crop). */
export async function preparePairWithGeometry(t: PrepareTask): Promise<{ pixels: Float32Array; geometry: PairGeometry }> {
  const [c, r] = await Promise.all([
    decodeImage(t.chosen, { source: t.source, row: t.row, field: t.chosenField }),
    decodeImage(t.rejected, { source: t.source, row: t.row, field: t.rejectedField }),
  ]);
  const n = 3 * t.augment.resolution * t.augment.resolution;
  const out = new Float32Array(2 * n);
  const geometry = await augmentPair(c, r, t.augment, new Rng(t.seed), out, 0, n);
  return { pixels: out, geometry };
}

export async function runTask(t: PrepareTask): Promise<PrepareResult> {
  try {
    const { pixels, geometry } = await preparePairWithGeometry(t);
    return { id: t.id, ok: true, pixels, geometry };
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
