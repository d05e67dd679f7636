// Fixture builders shared by the data tests (not a test file itself).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { parquetWriteFile } from "hyparquet-writer";

const made: string[] = [];
process.on("exit", () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A fresh temporary directory, removed when the test process exits. */
export function tempDir(prefix = "dpo-data-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** A w×h solid-ish RGB image (colour c plus a small gradient) as raw bytes. */
export function rawImage(w: number, h: number, c: [number, number, number]): Uint8Array {
  const d = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = (y * w + x) * 3;
    d[i] = Math.min(255, c[0] + x);
    d[i + 1] = Math.min(255, c[1] + y);
    d[i + 2] = c[2];
  }
  return d;
}

export async function jpeg(w: number, h: number, c: [number, number, number]): Promise<Uint8Array> {
  const b = await sharp(rawImage(w, h, c), { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 95 }).toBuffer();
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

export async function png(w: number, h: number, c: [number, number, number]): Promise<Uint8Array> {
  const b = await sharp(rawImage(w, h, c), { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

export interface PickRow {
  caption: string | null;
  jpg_0: Uint8Array;
  jpg_1: Uint8Array;
  label_0: number;
  label_1: number;
  model_0?: string;
  model_1?: string;
  has_label?: boolean;
  are_different?: boolean;
}

/**
 * Writes rows with the Pick-a-Pic v2 column set (REFERENCE.md §3) to `filename`.
 * `omit` drops columns (to test missing-column errors).
 */
export function writePickapic(filename: string, rows: PickRow[], opts: { rowGroupSize?: number; omit?: string[] } = {}): void {
  const n = rows.length;
  const ids = rows.map((_, i) => BigInt(1000 + i));
  const cols = [
    { name: "caption", data: rows.map((r) => r.caption), type: "STRING" as const },
    { name: "jpg_0", data: rows.map((r) => r.jpg_0), type: "BYTE_ARRAY" as const },
    { name: "jpg_1", data: rows.map((r) => r.jpg_1), type: "BYTE_ARRAY" as const },
    { name: "label_0", data: Float64Array.from(rows.map((r) => r.label_0)), type: "DOUBLE" as const },
    { name: "label_1", data: Float64Array.from(rows.map((r) => r.label_1)), type: "DOUBLE" as const },
    { name: "best_image_uid", data: rows.map((r, i) => (r.label_0 === 0.5 ? "" : r.label_0 === 1 ? `u0-${i}` : `u1-${i}`)), type: "STRING" as const },
    { name: "image_0_uid", data: rows.map((_, i) => `u0-${i}`), type: "STRING" as const },
    { name: "image_1_uid", data: rows.map((_, i) => `u1-${i}`), type: "STRING" as const },
    { name: "image_0_url", data: rows.map((_, i) => `https://example.invalid/u0-${i}.png`), type: "STRING" as const },
    { name: "image_1_url", data: rows.map((_, i) => `https://example.invalid/u1-${i}.png`), type: "STRING" as const },
    { name: "model_0", data: rows.map((r) => r.model_0 ?? "sd-1.5"), type: "STRING" as const },
    { name: "model_1", data: rows.map((r) => r.model_1 ?? "sdxl"), type: "STRING" as const },
    { name: "are_different", data: rows.map((r) => r.are_different ?? true), type: "BOOLEAN" as const },
    { name: "has_label", data: rows.map((r) => r.has_label ?? true), type: "BOOLEAN" as const },
    { name: "created_at", data: rows.map((_, i) => new Date(Date.UTC(2023, 3, 1, 0, 0, i))), type: "TIMESTAMP" as const },
    { name: "ranking_id", data: BigInt64Array.from(ids), type: "INT64" as const },
    { name: "user_id", data: BigInt64Array.from(rows.map((_, i) => BigInt(i % 3))), type: "INT64" as const },
    { name: "num_example_per_prompt", data: BigInt64Array.from(rows.map(() => 1n)), type: "INT64" as const },
    { name: "__index_level_0__", data: BigInt64Array.from(rows.map((_, i) => BigInt(i))), type: "INT64" as const },
  ].filter((c) => !(opts.omit ?? []).includes(c.name));
  parquetWriteFile({ filename, columnData: cols, rowGroupSize: opts.rowGroupSize ?? n });
}
