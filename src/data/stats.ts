// What a preference reader counts as it reads (rows, pairs, ties, skipped rows by reason).
// Kept apart from types.ts so that errors.ts can use it while types.ts names DataError.

/** Why a row did not become a pair. */
export type SkipReason =
  | "corrupt-image"
  | "missing-file"
  | "missing-column"
  | "wrong-type"
  | "empty-caption"
  | "bad-label";

export interface ReadStats {
  /** Rows (lines, files, store pairs) looked at. */
  rowsRead: number;
  /** Pairs produced. */
  pairs: number;
  /** Ties (0.5/0.5 labels, 'tie' votes) dropped. */
  tiesDropped: number;
  /** Rows removed by the user's filters (has_label, are_different, models). */
  filtered: number;
  /** Pairs whose winner was the second image and were swapped so the chosen one is first. */
  swapped: number;
  /** Bad rows skipped with `skipBad`, by reason. */
  skipped: Partial<Record<SkipReason, number>>;
  /** The first few skipped rows' messages (at most 20), for the report. */
  skippedExamples: string[];
}

export function emptyStats(): ReadStats {
  return { rowsRead: 0, pairs: 0, tiesDropped: 0, filtered: 0, swapped: 0, skipped: {}, skippedExamples: [] };
}

/** Total number of skipped rows in `stats`. */
export function skippedTotal(stats: ReadStats): number {
  let n = 0;
  for (const v of Object.values(stats.skipped)) n += v ?? 0;
  return n;
}
