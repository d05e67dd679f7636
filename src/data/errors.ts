import type { ReadStats, SkipReason } from "./stats.js";

/**
 * A bad input row. Thrown by default; with `skipBad` it is counted in the reader's stats
 * instead. The message always names the source, the row and the field.
 */
export class DataError extends Error {
  override readonly name = "DataError";
  constructor(
    readonly reason: SkipReason,
    /** File, table or directory the row came from. */
    readonly source: string,
    /** 0-based row (line, file index, store pair id) or null when the whole source is bad. */
    readonly row: number | null,
    /** Column or field name (jpg_0, label_0, caption, w/ ...) or null. */
    readonly field: string | null,
    detail: string,
  ) {
    const at = [source, row === null ? null : `row ${row}`, field === null ? null : `field '${field}'`]
      .filter((s) => s !== null)
      .join(", ");
    super(`${at}: ${detail}`);
  }
}

const MAX_EXAMPLES = 20;

/**
 * Either throws `error` (skipBad false) or records it in `stats` (skipBad true).
 */
export function handleBad(error: DataError, skipBad: boolean, stats: ReadStats): void {
  if (!skipBad) throw error;
  stats.skipped[error.reason] = (stats.skipped[error.reason] ?? 0) + 1;
  if (stats.skippedExamples.length < MAX_EXAMPLES) stats.skippedExamples.push(error.message);
}
