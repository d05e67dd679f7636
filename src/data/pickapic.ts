/**
 * Pick-a-Pic parquet shards (HF yuvalkirstain/pickapic_v2), exact schema of REFERENCE.md §3:
 * caption, jpg_0, jpg_1 (JPEG bytes), label_0, label_1 (float64), model_0/1, are_different,
 * has_label, ranking_id, ... one row per comparison.
 *
 * Reading streams shard by shard and row group by row group (a unit of the loader is one row
 * group): only the footer and the requested columns of one row group are in memory at a time.
 * (label_0, label_1) = (1, 0) keeps the order, (0, 1) swaps so the winner is first, (0.5, 0.5) is
 * a tie, dropped by default and counted, like the official script.
 */
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from "hyparquet";
import type { AsyncBuffer, FileMetaData } from "hyparquet";
import { compressors } from "hyparquet-compressors";
import { DataError } from "./errors.js";
import { listFiles } from "./files.js";
import { badRow, checkPairImages, parseLabels } from "./common.js";
import type { PairUnit, PreferencePair, PreferenceSource, ReaderOptions, RowResult, SkipReason } from "./types.js";

export interface PickapicFilters {
  /** Keep only rows whose has_label equals this (true keeps labelled rows). */
  hasLabel?: boolean;
  /** Keep only rows whose are_different equals this. */
  areDifferent?: boolean;
  /** Keep rows whose (model_0, model_1) pass: a list both models must be in, or a predicate. */
  models?: string[] | ((model0: string, model1: string) => boolean);
}

export interface PickapicOptions extends ReaderOptions {
  filters?: PickapicFilters;
  /** How a shard is opened (default: ranged reads of the local file); tests count bytes with it. */
  openFile?: (path: string) => Promise<AsyncBuffer>;
}

export const PICKAPIC_REQUIRED = ["caption", "jpg_0", "jpg_1", "label_0", "label_1"] as const;
const META_COLUMNS = ["ranking_id", "model_0", "model_1", "best_image_uid", "image_0_uid", "image_1_uid", "user_id", "has_label", "are_different"];

interface Shard {
  path: string;
  file: AsyncBuffer;
  metadata: FileMetaData;
  columns: Set<string>;
  /** First row of each row group inside the file. */
  starts: number[];
}

function schemaColumns(md: FileMetaData): Set<string> {
  // top-level column names (Pick-a-Pic is flat)
  const names = new Set<string>();
  const root = md.schema[0];
  let i = 1;
  const n = root?.num_children ?? md.schema.length - 1;
  for (let c = 0; c < n && i < md.schema.length; c++) {
    const el = md.schema[i]!;
    names.add(el.name);
    // skip nested children
    let skip = el.num_children ?? 0;
    i++;
    while (skip > 0 && i < md.schema.length) {
      skip += (md.schema[i]!.num_children ?? 0) - 1;
      i++;
    }
  }
  return names;
}

export class PickapicSource implements PreferenceSource {
  readonly name: string;
  readonly files: string[];
  private shards: Shard[] | null = null;
  private unitList: { shard: number; group: number; rows: number; key: string }[] = [];
  private readonly opts: PickapicOptions;

  constructor(spec: string | string[], opts: PickapicOptions = {}) {
    this.name = Array.isArray(spec) ? spec.join(",") : spec;
    this.files = Array.isArray(spec) ? [...spec].sort() : listFiles(spec, [".parquet"], "parquet");
    this.opts = opts;
  }

  private async open(): Promise<Shard[]> {
    if (this.shards) return this.shards;
    const shards: Shard[] = [];
    for (const path of this.files) {
      let file: AsyncBuffer;
      let metadata: FileMetaData;
      try {
        file = await (this.opts.openFile ?? asyncBufferFromFile)(path);
        metadata = await parquetMetadataAsync(file);
      } catch (e) {
        throw new Error(`${path}: not a readable parquet file (${(e as Error).message})`);
      }
      const starts: number[] = [];
      let s = 0;
      for (const rg of metadata.row_groups) {
        starts.push(s);
        s += Number(rg.num_rows);
      }
      shards.push({ path, file, metadata, columns: schemaColumns(metadata), starts });
    }
    this.shards = shards;
    this.unitList = [];
    shards.forEach((sh, si) =>
      sh.metadata.row_groups.forEach((rg, gi) => this.unitList.push({ shard: si, group: gi, rows: Number(rg.num_rows), key: `${sh.path}#rg${gi}` })),
    );
    return shards;
  }

  async units(): Promise<PairUnit[]> {
    await this.open();
    return this.unitList.map((u) => ({ key: u.key, rows: u.rows }));
  }

  /** Total rows over all shards (from the footers; cheap). */
  async rowCount(): Promise<number> {
    await this.open();
    return this.unitList.reduce((a, u) => a + u.rows, 0);
  }

  async readUnit(index: number): Promise<RowResult[]> {
    const shards = await this.open();
    const u = this.unitList[index];
    if (!u) throw new Error(`${this.name}: unit ${index} out of range (0..${this.unitList.length - 1})`);
    const sh = shards[u.shard]!;
    const first = sh.starts[u.group]!;
    const f = this.opts.filters ?? {};
    const needed: string[] = [...PICKAPIC_REQUIRED];
    if (f.hasLabel !== undefined) needed.push("has_label");
    if (f.areDifferent !== undefined) needed.push("are_different");
    if (f.models !== undefined) needed.push("model_0", "model_1");
    const missing = needed.filter((c) => !sh.columns.has(c));
    if (missing.length > 0) {
      const err = new DataError("missing-column", sh.path, null, missing[0]!,
        `missing column(s) ${missing.join(", ")}; a Pick-a-Pic shard needs ${needed.join(", ")} (found: ${[...sh.columns].join(", ")})`);
      return Array.from({ length: u.rows }, () => ({ kind: "error" as const, error: err }));
    }
    const columns = [...new Set([...needed, ...META_COLUMNS.filter((c) => sh.columns.has(c))])];
    let rows: Record<string, unknown>[];
    try {
      rows = (await parquetReadObjects({
        file: sh.file,
        metadata: sh.metadata,
        columns,
        rowStart: first,
        rowEnd: first + u.rows,
        utf8: false,
        compressors,
      })) as Record<string, unknown>[];
    } catch (e) {
      throw new Error(`${sh.path}: cannot read row group ${u.group} (rows ${first}..${first + u.rows - 1}): ${(e as Error).message}; the shard may be truncated`);
    }
    const out: RowResult[] = [];
    for (let i = 0; i < rows.length; i++) {
      out.push(await this.convert(rows[i]!, sh.path, first + i));
    }
    return out;
  }

  private async convert(r: Record<string, unknown>, path: string, row: number): Promise<RowResult> {
    const bad = (reason: SkipReason, field: string, detail: string): RowResult => badRow(reason, path, row, field, detail);
    const f = this.opts.filters ?? {};
    const caption = r.caption;
    if (typeof caption !== "string") {
      if (caption instanceof Uint8Array) return bad("wrong-type", "caption", "caption is binary, expected a UTF-8 string column");
      return bad(caption == null ? "empty-caption" : "wrong-type", "caption", caption == null ? "caption is null" : `caption has type ${typeof caption}, expected string`);
    }
    if (caption.trim() === "") return bad("empty-caption", "caption", "caption is empty");
    for (const field of ["jpg_0", "jpg_1"]) {
      const v = r[field];
      if (!(v instanceof Uint8Array)) {
        return bad("wrong-type", field, v == null ? "image bytes are null" : `expected JPEG bytes (binary), got ${typeof v === "string" ? "a string" : typeof v}`);
      }
    }
    const labels = parseLabels(r.label_0, r.label_1);
    if ("error" in labels) return bad(labels.reason, labels.field, labels.error);
    const l0 = r.label_0 as number;
    const l1 = r.label_1 as number;

    if (f.hasLabel !== undefined && r.has_label !== f.hasLabel) return { kind: "filtered" };
    if (f.areDifferent !== undefined && r.are_different !== f.areDifferent) return { kind: "filtered" };
    if (f.models !== undefined) {
      const m0 = String(r.model_0 ?? "");
      const m1 = String(r.model_1 ?? "");
      const keep = typeof f.models === "function" ? f.models(m0, m1) : f.models.includes(m0) && f.models.includes(m1);
      if (!keep) return { kind: "filtered" };
    }
    const tie = labels.first === null;
    if (tie && (this.opts.dropTies ?? true)) return { kind: "tie" };

    const jpg0 = r.jpg_0 as Uint8Array;
    const jpg1 = r.jpg_1 as Uint8Array;
    if (this.opts.checkImages) {
      const badImage = await checkPairImages(path, row, { img: jpg0, field: "jpg_0" }, { img: jpg1, field: "jpg_1" });
      if (badImage !== null) return badImage;
    }
    const swap = labels.first === false;
    const meta: Record<string, unknown> = { label_0: l0, label_1: l1 };
    for (const k of META_COLUMNS) if (r[k] !== undefined) meta[k] = typeof r[k] === "bigint" ? String(r[k]) : r[k];
    const pair: PreferencePair = {
      id: r.ranking_id != null ? String(r.ranking_id) : `${path}#${row}`,
      prompt: caption,
      chosen: swap ? jpg1 : jpg0,
      rejected: swap ? jpg0 : jpg1,
      fields: swap ? { chosen: "jpg_1", rejected: "jpg_0" } : { chosen: "jpg_0", rejected: "jpg_1" },
      tie,
      source: { file: path, row },
      meta,
    };
    return { kind: "pair", pair, swapped: swap };
  }
}
