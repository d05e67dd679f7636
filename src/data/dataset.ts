/**
 * Reading any `PreferenceSource` as one stream of pairs, with stats and skip-bad handling.
 */
import { handleBad } from "./errors.js";
import { emptyStats } from "./types.js";
import type { PreferencePair, PreferenceSource, ReadStats, RowResult } from "./types.js";

/** Applies one row result to `stats`; returns the pair when there is one. Throws on errors unless skipBad. */
export function tally(r: RowResult, stats: ReadStats, skipBad: boolean): PreferencePair | null {
  stats.rowsRead++;
  switch (r.kind) {
    case "pair":
      stats.pairs++;
      if (r.swapped) stats.swapped++;
      return r.pair;
    case "tie":
      stats.tiesDropped++;
      return null;
    case "filtered":
      stats.filtered++;
      return null;
    case "error":
      handleBad(r.error, skipBad, stats);
      return null;
  }
}

export class PreferenceDataset {
  readonly stats: ReadStats = emptyStats();
  constructor(
    readonly source: PreferenceSource,
    readonly skipBad = false,
  ) {}

  /** All pairs in source order, unit by unit (only one unit in memory). Stats accumulate. */
  async *pairs(): AsyncGenerator<PreferencePair> {
    const units = await this.source.units();
    for (let u = 0; u < units.length; u++) {
      const rows = await this.source.readUnit(u);
      for (const r of rows) {
        const p = tally(r, this.stats, this.skipBad);
        if (p) yield p;
      }
    }
  }

  /** Reads everything into an array (small data sets, tests). */
  async toArray(): Promise<PreferencePair[]> {
    const out: PreferencePair[] = [];
    for await (const p of this.pairs()) out.push(p);
    return out;
  }

  /** Number of rows in the source (before ties and filters), from unit sizes. */
  async rowCount(): Promise<number> {
    return (await this.source.units()).reduce((a, u) => a + u.rows, 0);
  }

  async close(): Promise<void> {
    await this.source.close?.();
  }
}
