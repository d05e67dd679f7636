// Writing a preference store's resolved pairs out: JSONL (chosen / rejected) and Pick-a-Pic-schema parquet.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import sharp from "sharp";
import { parquetWriteFile } from "hyparquet-writer";
import { StoreSource } from "./store-source.js";
import type { ResolveOptions, StoreReader, StoreSourceOptions, StoredImage, StoredPair } from "./store-types.js";

export interface ExportParquetOptions extends ResolveOptions {
  includeTies?: boolean;
  rowGroupSize?: number;
  jpegQuality?: number;
}

/**
 * Writes resolved pairs as JSONL (chosen/rejected form); images stored as bytes are written
 * to `imagesDir` (default: "<jsonl>.images/") as files named by image id.
 */
export async function exportStoreJsonl(store: StoreReader, file: string, opts: StoreSourceOptions & { imagesDir?: string } = {}): Promise<{ pairs: number }> {
  const imagesDir = opts.imagesDir ?? `${file}.images`;
  const lines: string[] = [];
  const src = new StoreSource(store, { ...opts, dropTies: true });
  const written = new Set<number>();
  const pathOf = (id: number): string => {
    const img = store.image(id)!;
    if (img.path) return img.path;
    const p = join(imagesDir, `${id}.${img.format ?? "png"}`);
    if (!written.has(id)) {
      mkdirSync(imagesDir, { recursive: true });
      writeFileSync(p, img.data!);
      written.add(id);
    }
    return p;
  };
  for (const id of store.pairIds()) {
    const res = src.resolution(id);
    if (res.winner === null || res.winner === "tie") continue;
    const p = store.pair(id)!;
    const [c, r] = res.winner === "a" ? [p.imageA, p.imageB] : [p.imageB, p.imageA];
    lines.push(JSON.stringify({ id: String(id), prompt: p.prompt, chosen: pathOf(c), rejected: pathOf(r), labelled_by: res.by }));
  }
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, lines.length ? lines.join("\n") + "\n" : "");
  return { pairs: lines.length };
}

/**
 * Writes labelled pairs as a Pick-a-Pic-schema parquet file (jpg_0 = image a, jpg_1 = image b,
 * re-encoded to JPEG when stored otherwise; labels (1,0), (0,1) or (0.5,0.5) for ties when
 * `includeTies`).
 */
export async function exportStoreParquet(store: StoreReader, file: string, opts: ExportParquetOptions = {}): Promise<{ rows: number }> {
  const rows: { caption: string; jpg0: Uint8Array; jpg1: Uint8Array; l0: number; l1: number; p: StoredPair; a: StoredImage; b: StoredImage; created: string }[] = [];
  const toJpeg = async (img: StoredImage): Promise<Uint8Array> => {
    const bytes = img.data ?? readFileSync(img.path!);
    const isJpeg = bytes[0] === 0xff && bytes[1] === 0xd8;
    if (isJpeg) return bytes;
    const b = await sharp(bytes).jpeg({ quality: opts.jpegQuality ?? 95 }).toBuffer();
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  };
  for (const id of store.pairIds()) {
    const res = store.resolve(id, opts);
    if (res.winner === null || (res.winner === "tie" && !opts.includeTies)) continue;
    const p = store.pair(id)!;
    const a = store.image(p.imageA)!;
    const b = store.image(p.imageB)!;
    const [l0, l1] = res.winner === "a" ? [1, 0] : res.winner === "b" ? [0, 1] : [0.5, 0.5];
    rows.push({ caption: p.prompt, jpg0: await toJpeg(a), jpg1: await toJpeg(b), l0, l1, p, a, b, created: p.createdAt });
  }
  mkdirSync(dirname(file), { recursive: true });
  const uid = (img: StoredImage) => `store-image-${img.id}`;
  parquetWriteFile({
    filename: file,
    rowGroupSize: opts.rowGroupSize ?? 100,
    columnData: [
      { name: "caption", data: rows.map((r) => r.caption), type: "STRING" },
      { name: "jpg_0", data: rows.map((r) => r.jpg0), type: "BYTE_ARRAY" },
      { name: "jpg_1", data: rows.map((r) => r.jpg1), type: "BYTE_ARRAY" },
      { name: "label_0", data: Float64Array.from(rows.map((r) => r.l0)), type: "DOUBLE" },
      { name: "label_1", data: Float64Array.from(rows.map((r) => r.l1)), type: "DOUBLE" },
      { name: "best_image_uid", data: rows.map((r) => (r.l0 === 1 ? uid(r.a) : r.l1 === 1 ? uid(r.b) : "")), type: "STRING" },
      { name: "image_0_uid", data: rows.map((r) => uid(r.a)), type: "STRING" },
      { name: "image_1_uid", data: rows.map((r) => uid(r.b)), type: "STRING" },
      { name: "image_0_url", data: rows.map((r) => r.a.path ?? ""), type: "STRING" },
      { name: "image_1_url", data: rows.map((r) => r.b.path ?? ""), type: "STRING" },
      { name: "model_0", data: rows.map((r) => r.a.model ?? ""), type: "STRING" },
      { name: "model_1", data: rows.map((r) => r.b.model ?? ""), type: "STRING" },
      { name: "are_different", data: rows.map(() => true), type: "BOOLEAN" },
      { name: "has_label", data: rows.map(() => true), type: "BOOLEAN" },
      { name: "created_at", data: rows.map((r) => new Date(r.created)), type: "TIMESTAMP" },
      { name: "ranking_id", data: BigInt64Array.from(rows.map((r) => BigInt(r.p.id))), type: "INT64" },
      { name: "user_id", data: BigInt64Array.from(rows.map(() => 0n)), type: "INT64" },
      { name: "num_example_per_prompt", data: BigInt64Array.from(rows.map(() => 1n)), type: "INT64" },
      { name: "__index_level_0__", data: BigInt64Array.from(rows.map((_, i) => BigInt(i))), type: "INT64" },
    ],
  });
  return { rows: rows.length };
}
