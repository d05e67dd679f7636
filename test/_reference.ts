// Access to ../shared/data/reference-models: tiny random models saved by the real diffusers /
// transformers libraries with their inputs and outputs (the ground truth for model code).
// The folder is read-only and shared; nothing here writes into it.
//
//   const c = referenceCase("sd15-pipeline");
//   const ids = c.tensor("input_ids");          // inputs and outputs by name, as case.json lists them
//   const dir = c.pipelineFolder();              // a temp copy whose CLIP tokenizers have vocab.json + merges.txt
//   assertClose(ours, c.tensor("unet_out"), 1e-5, "unet_out");
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import assert from "node:assert/strict";
import { fromBytes, type Tensor } from "../src/tensor/index.js";
import { scaledError } from "./_close.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REFERENCE_MODELS_DIR = resolve(repoRoot, "..", "shared", "data", "reference-models");
export const SHARED_DATA_DIR = resolve(repoRoot, "..", "shared", "data");

export interface TensorEntry { file: string; dtype: "f32" | "i64"; shape: number[]; note?: string }

export interface ReferenceCase {
  name: string;
  dir: string;
  json: Record<string, unknown> & {
    inputs?: Record<string, TensorEntry>;
    outputs?: Record<string, TensorEntry>;
    values?: Record<string, unknown>;
    components?: Record<string, Record<string, unknown>>;
  };
  entry(name: string): TensorEntry;
  /** The named input or output as a libtorch tensor (f32 or i64, its recorded shape). */
  tensor(name: string): Tensor;
  /** The named input or output as a flat JS array (numbers; i64 converted). */
  array(name: string): number[];
  /** A temp copy of `<case>/<sub>` with the CLIP tokenizer files restored (see the README). */
  pipelineFolder(sub?: string): string;
}

export function referenceCase(name: string): ReferenceCase {
  const dir = join(REFERENCE_MODELS_DIR, name);
  const path = join(dir, "case.json");
  if (!existsSync(path)) throw new Error(`reference case ${name}: ${path} not found (../shared must sit beside the repository)`);
  const json = JSON.parse(readFileSync(path, "utf8")) as ReferenceCase["json"];
  const entry = (n: string): TensorEntry => {
    const e = json.inputs?.[n] ?? json.outputs?.[n];
    if (!e) throw new Error(`reference case ${name}: no input or output named ${n}`);
    return e;
  };
  const bytes = (e: TensorEntry): Uint8Array => {
    const b = readFileSync(join(dir, e.file));
    const want = (e.dtype === "i64" ? 8 : 4) * e.shape.reduce((a, s) => a * s, 1);
    if (b.byteLength !== want) throw new Error(`reference case ${name}: ${e.file} has ${b.byteLength} bytes, expected ${want}`);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  };
  return {
    name, dir, json, entry,
    tensor: (n) => { const e = entry(n); return fromBytes(bytes(e), e.shape, e.dtype); },
    array: (n) => {
      const e = entry(n);
      const b = bytes(e);
      const copy = b.slice().buffer;
      return e.dtype === "i64" ? Array.from(new BigInt64Array(copy), (v) => Number(v)) : Array.from(new Float32Array(copy));
    },
    pipelineFolder: (sub = "pipeline") => materializeFolder(join(dir, sub)),
  };
}

let clipFiles: { vocab: string; merges: string } | null = null;

/** vocab.json and merges.txt built from CLIP's bpe_simple_vocab_16e6.txt.gz as the README describes. */
export function clipTokenizerFiles(): { vocab: string; merges: string } {
  if (clipFiles) return clipFiles;
  const text = gunzipSync(readFileSync(join(SHARED_DATA_DIR, "tokenizer", "bpe_simple_vocab_16e6.txt.gz"))).toString("utf8");
  const lines = text.split("\n").slice(1, 49152 - 256 - 2 + 1);
  // openai/CLIP's bytes_to_unicode, in its dict order (printable bytes first, then the rest mapped to 256+)
  const printable: number[] = [];
  for (let i = 33; i <= 126; i++) printable.push(i);
  for (let i = 161; i <= 172; i++) printable.push(i);
  for (let i = 174; i <= 255; i++) printable.push(i);
  const symbols = printable.map((b) => String.fromCodePoint(b));
  let n = 0;
  for (let b = 0; b < 256; b++) if (!printable.includes(b)) symbols.push(String.fromCodePoint(256 + n++));
  const vocab: string[] = [...symbols, ...symbols.map((s) => `${s}</w>`)];
  for (const line of lines) vocab.push(line.split(" ").join(""));
  vocab.push("<|startoftext|>", "<|endoftext|>");
  const ids: Record<string, number> = {};
  vocab.forEach((tok, i) => { ids[tok] = i; });
  // Python's sort_keys orders by code point; JS's < compares UTF-16 units (differs for astral symbols)
  const byCodePoint = (a: string, b: string): number => {
    const x = Array.from(a, (c) => c.codePointAt(0)!), y = Array.from(b, (c) => c.codePointAt(0)!);
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
    return x.length - y.length;
  };
  const sorted = Object.keys(ids).sort(byCodePoint);
  // written by hand: a JS object would put integer-like keys ("0", "1", …) first
  const body = sorted.map((k) => `  ${JSON.stringify(k)}: ${ids[k]}`).join(",\n");
  clipFiles = { vocab: `{\n${body}\n}\n`, merges: `#version: 0.2\n${lines.join("\n")}\n` };
  return clipFiles;
}

function materializeFolder(src: string): string {
  const out = mkdtempSync(join(tmpdir(), "ddpo-ref-"));
  cpSync(src, out, { recursive: true });
  for (const name of readdirSync(out)) {
    if (!name.startsWith("tokenizer")) continue;
    const tdir = join(out, name);
    if (existsSync(join(tdir, "spiece.model")) || existsSync(join(tdir, "vocab.json"))) continue;
    const { vocab, merges } = clipTokenizerFiles();
    writeFileSync(join(tdir, "vocab.json"), vocab);
    writeFileSync(join(tdir, "merges.txt"), merges);
  }
  return out;
}

/**
 * Relative error as these tests report it: max |ours − ref| / max |ref| (one scale for the whole
 * tensor, so near-zero elements do not blow it up). The same measure as test/_close.ts.
 */
export const relativeError = scaledError;

/** Asserts shapes equal and relativeError ≤ tol; returns the error so a test can report it. */
export function assertClose(ours: Tensor, ref: Tensor, tol: number, what: string): number {
  assert.deepEqual(ours.shape, ref.shape, `${what}: shape`);
  const a = Array.from(ours.toFloat32Array());
  const b = Array.from(ref.toFloat32Array());
  const err = relativeError(a, b);
  assert.ok(err <= tol, `${what}: relative error ${err.toExponential(3)} > ${tol}`);
  return err;
}
