/**
 * openPreferenceData: one entry point for every format. The format is detected from the path
 * unless given:
 *   *.parquet, a directory of *.parquet, or a glob such as data/train-*.parquet → "pickapic"
 *   a directory with w/ and l/ (or chosen/ and rejected/)                       → "folder"
 *   *.jsonl / *.ndjson                                                          → "jsonl"
 *   *.db / *.sqlite / *.sqlite3                                                 → "sqlite"
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { PreferenceDataset } from "./dataset.js";
import { isGlob } from "./files.js";
import { FolderSource, folderPairDirs } from "./folder.js";
import { JsonlSource } from "./jsonl.js";
import { PreferenceLoader, type LoaderOptions } from "./loader.js";
import { PickapicSource, type PickapicFilters } from "./pickapic.js";
import { PreferenceStore, type ResolveOptions } from "./store.js";
import type { PreferenceSource, ReaderOptions } from "./types.js";

export type DataFormat = "pickapic" | "folder" | "jsonl" | "sqlite";

export interface OpenOptions extends ReaderOptions {
  format?: DataFormat;
  /** Pick-a-Pic row filters. */
  filters?: PickapicFilters;
  /** How store pairs are labelled (SQLite only). */
  labels?: ResolveOptions;
}

/** Detects the format of `spec` from its name and, for directories, their contents. */
export function detectFormat(spec: string): DataFormat {
  const lower = spec.toLowerCase();
  if (isGlob(spec)) {
    if (lower.endsWith(".parquet")) return "pickapic";
    throw new Error(`${spec}: a glob must name parquet shards (e.g. data/train-*.parquet)`);
  }
  if (lower.endsWith(".parquet")) return "pickapic";
  if (lower.endsWith(".jsonl") || lower.endsWith(".ndjson")) return "jsonl";
  if (/\.(db|sqlite|sqlite3)$/.test(lower)) return "sqlite";
  if (existsSync(spec) && statSync(spec).isDirectory()) {
    if (folderPairDirs(spec)) return "folder";
    if (readdirSync(spec).some((n) => n.toLowerCase().endsWith(".parquet"))) return "pickapic";
    throw new Error(`${spec}: directory holds neither parquet shards nor w/ and l/ sub-directories; pass format explicitly`);
  }
  if (!existsSync(spec)) throw new Error(`${spec}: no such file or directory`);
  throw new Error(`${spec}: cannot tell the data format from the name; use .parquet, .jsonl, .db/.sqlite or a w/ l/ folder, or pass format`);
}

export class PreferenceData extends PreferenceDataset {
  constructor(
    readonly format: DataFormat,
    source: PreferenceSource,
    skipBad: boolean,
    private readonly onClose?: () => void,
  ) {
    super(source, skipBad);
  }

  /** A batch loader over the same source (its own stats; skipBad as opened unless overridden). */
  loader(opts: LoaderOptions): PreferenceLoader {
    return new PreferenceLoader(this.source, { skipBad: this.skipBad, ...opts });
  }

  override async close(): Promise<void> {
    await super.close();
    this.onClose?.();
  }
}

/** Opens a preference data set of any supported format as one stream of `PreferencePair`s. */
export function openPreferenceData(spec: string, opts: OpenOptions = {}): PreferenceData {
  const format = opts.format ?? detectFormat(spec);
  const reader: ReaderOptions = { dropTies: opts.dropTies, skipBad: opts.skipBad, checkImages: opts.checkImages };
  const skipBad = opts.skipBad ?? false;
  switch (format) {
    case "pickapic":
      return new PreferenceData(format, new PickapicSource(spec, { ...reader, filters: opts.filters }), skipBad);
    case "folder":
      return new PreferenceData(format, new FolderSource(spec, reader), skipBad);
    case "jsonl":
      return new PreferenceData(format, new JsonlSource(spec, reader), skipBad);
    case "sqlite": {
      if (!existsSync(spec)) throw new Error(`${spec}: no such preference store`);
      const store = new PreferenceStore(spec);
      return new PreferenceData(format, store.source({ ...reader, ...opts.labels }), skipBad, () => store.close());
    }
    default:
      throw new Error(`unknown data format '${String(format)}'; use pickapic, folder, jsonl or sqlite`);
  }
}
