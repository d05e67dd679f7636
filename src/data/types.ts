/**
 * The one shape every preference reader produces.
 *
 * Pairing is settled here, in the data layer: after loading, the chosen image is always first
 * and ties are gone (unless a reader was asked to keep them). Images stay encoded (bytes or a
 * path) until the loader decodes them, so large data sets stream.
 */

import type { DataError } from "./errors.js";

/** Encoded image bytes (JPEG/PNG/WebP...), or the path of a local image file. */
export type ImageSource = Uint8Array | string;

/** A decoded image: height × width × 3, RGB, row-major, 8 bits per channel. */
export interface RawImage {
  width: number;
  height: number;
  channels: 3;
  data: Uint8Array;
}

/** Where a pair came from: the file (or table) and the 0-based row inside it. */
export interface PairOrigin {
  file: string;
  row: number;
}

export interface PreferencePair {
  /** Stable identifier (Pick-a-Pic's ranking_id, the file name, the store's pair id ...). */
  id: string;
  prompt: string;
  chosen: ImageSource;
  rejected: ImageSource;
  /** Field names of the chosen and rejected image in the source (e.g. "jpg_1", "jpg_0"). */
  fields?: { chosen: string; rejected: string };
  /** True only for ties kept with `dropTies: false`; then "chosen"/"rejected" is arbitrary. */
  tie: boolean;
  source: PairOrigin;
  meta?: Record<string, unknown>;
}

export { emptyStats, skippedTotal, type ReadStats, type SkipReason } from "./stats.js";

/** Options every reader accepts. */
export interface ReaderOptions {
  /** Drop ties (default true, as the official script). */
  dropTies?: boolean;
  /** Skip bad rows, counting them in `stats.skipped`, instead of throwing (default false). */
  skipBad?: boolean;
  /**
   * Decode every image while reading, so corrupt or truncated bytes are caught by the reader
   * (default false: the loader finds them when it decodes, with the same errors).
   */
  checkImages?: boolean;
}

/**
 * A source the loader can read in units (a parquet row group, or a whole indexable file).
 * `readUnit` returns the unit's rows in file order, each a pair, a dropped marker or an error.
 */
export interface PairUnit {
  /** Stable key, e.g. "shard-00001.parquet#rg3". */
  key: string;
  rows: number;
}

export type RowResult =
  | { kind: "pair"; pair: PreferencePair; /** the winner was the second image */ swapped?: boolean }
  | { kind: "tie" }
  | { kind: "filtered" }
  | { kind: "error"; error: DataError };

export interface PreferenceSource {
  /** Human-readable name for messages (the path given). */
  readonly name: string;
  units(): Promise<PairUnit[]>;
  readUnit(index: number): Promise<RowResult[]>;
  close?(): void | Promise<void>;
}
