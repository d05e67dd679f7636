// The safetensors format (huggingface/safetensors): an 8-byte little-endian u64 header length N,
// N bytes of UTF-8 JSON
//   {"__metadata__": {string: string}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// then the data buffer; offsets are relative to the start of the buffer, little-endian, C order.
//
// Reading is lazy and positioned (`SafetensorsFile.open` reads only the header; `read(name)` reads
// one tensor with fs.readSync at a numeric position), so files larger than 2 GiB never have to fit
// in memory. Validation follows the reference implementation: header at most 100 MB, valid UTF-8
// JSON, known dtypes, byte sizes that match shape × dtype size, offsets that tile the buffer from
// 0 with no gap or overlap, and a buffer that ends exactly at the end of the file.
//
// Writing follows the reference serializer: tensors sorted by descending dtype alignment, then by
// name; `__metadata__` first in the header; the header padded with spaces to a multiple of 8 bytes
// so every tensor starts aligned. The file is written to a temporary file in the same directory,
// one tensor at a time (never one buffer of everything), then renamed over the target.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { open as openAsync, rename as renameAsync, unlink as unlinkAsync, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { fromBytes, toBytes } from "../tensor/ops.js";
import { Tensor, type DType } from "../tensor/tensor.js";

/** Every dtype of the format, in the reference implementation's order (increasing alignment). */
export const SAFETENSORS_DTYPES = [
  "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64",
] as const;
export type SafetensorsDtype = (typeof SAFETENSORS_DTYPES)[number];

const DTYPE_SIZE: Record<SafetensorsDtype, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8,
};
const DTYPE_RANK = new Map<string, number>(SAFETENSORS_DTYPES.map((d, i) => [d, i]));

/** Our dtype → the file's dtype. */
export const SAFETENSORS_DTYPE_OF: Record<DType, SafetensorsDtype> = {
  f64: "F64", f32: "F32", f16: "F16", bf16: "BF16", i64: "I64", i32: "I32", i16: "I16", i8: "I8", u8: "U8", bool: "BOOL",
};

/**
 * The dtype a file dtype loads as. Lossless widening for the types libtorch lacks: U16 → i32,
 * U32 → i64, U64 → i64 (an error if a value is ≥ 2^63), F8_E5M2 and F8_E4M3 → f16 (every FP8 value
 * is exactly representable in f16). Use `readRaw` for the untouched bytes.
 */
export const LOADED_DTYPE: Record<SafetensorsDtype, DType> = {
  BOOL: "bool", U8: "u8", I8: "i8", F8_E5M2: "f16", F8_E4M3: "f16", I16: "i16", U16: "i32", F16: "f16", BF16: "bf16",
  I32: "i32", U32: "i64", F32: "f32", F64: "f64", I64: "i64", U64: "i64",
};

/** The reference implementation refuses headers larger than this. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsTensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) in bytes, relative to the start of the data buffer. */
  dataOffsets: [number, number];
}

/** Bytes of a tensor with the file's dtype, for dtypes our tensors lack or to copy without converting. */
export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  bytes: Uint8Array;
}

export interface ParsedHeader {
  /** Bytes before the data buffer: 8 + header length. */
  dataStart: number;
  metadata: Record<string, string>;
  /** In offset order. */
  tensors: Map<string, SafetensorsTensorInfo>;
}

function fail(path: string, what: string): never {
  throw new Error(`safetensors file ${path}: ${what}`);
}

function isIntArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0);
}

/**
 * Parses and validates a header. `headerBytes` is the JSON (without the 8-byte length), `fileSize`
 * the whole file's size in bytes. Exported for tools that read headers from elsewhere.
 */
export function parseSafetensorsHeader(path: string, headerBytes: Uint8Array, fileSize: number): ParsedHeader {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    fail(path, "the header is not valid UTF-8 (is this a safetensors file?)");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    fail(path, `the header is not valid JSON (${(err as Error).message}); the file is damaged or not safetensors`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    fail(path, "the header must be a JSON object of tensor entries");
  }
  const metadata: Record<string, string> = {};
  const entries: [string, SafetensorsTensorInfo][] = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) fail(path, "__metadata__ must be an object of strings");
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") fail(path, `__metadata__ key "${k}" holds a ${typeof v}; metadata values must be strings`);
        metadata[k] = v;
      }
      continue;
    }
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) fail(path, `tensor "${name}": entry must be an object`);
    const e = raw as Record<string, unknown>;
    const extra = Object.keys(e).filter((k) => k !== "dtype" && k !== "shape" && k !== "data_offsets");
    if (extra.length > 0) fail(path, `tensor "${name}": unknown field(s) ${extra.join(", ")}`);
    const dtype = e.dtype;
    if (typeof dtype !== "string" || !DTYPE_RANK.has(dtype)) {
      fail(path, `tensor "${name}": unknown dtype ${JSON.stringify(dtype)} (known: ${SAFETENSORS_DTYPES.join(", ")})`);
    }
    if (!isIntArray(e.shape)) fail(path, `tensor "${name}": shape must be an array of non-negative integers`);
    const offsets = e.data_offsets;
    if (!isIntArray(offsets) || offsets.length !== 2) {
      fail(path, `tensor "${name}": data_offsets must be [begin, end] with non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) fail(path, `tensor "${name}": data_offsets [${begin}, ${end}] end before they begin`);
    let count = 1n;
    for (const d of e.shape) count *= BigInt(d);
    const need = count * BigInt(DTYPE_SIZE[dtype as SafetensorsDtype]);
    if (need !== BigInt(end - begin)) {
      fail(
        path,
        `tensor "${name}": shape [${e.shape.join(", ")}] of ${dtype} needs ${need} bytes but data_offsets ` +
          `[${begin}, ${end}] hold ${end - begin}`,
      );
    }
    entries.push([name, { dtype: dtype as SafetensorsDtype, shape: [...e.shape], dataOffsets: [begin, end] }]);
  }
  entries.sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
  let cursor = 0;
  let previous = "";
  for (const [name, info] of entries) {
    const [begin, end] = info.dataOffsets;
    if (begin < cursor) fail(path, `tensor "${name}": data_offsets [${begin}, ${end}] overlap tensor "${previous}" (ends at ${cursor})`);
    if (begin > cursor) {
      fail(path, `tensor "${name}": data_offsets begin at ${begin} but the previous tensor ends at ${cursor} (a gap of unused bytes)`);
    }
    cursor = end;
    previous = name;
  }
  const dataStart = 8 + headerBytes.length;
  const available = fileSize - dataStart;
  if (cursor > available) {
    const last = entries[entries.length - 1]?.[0] ?? "";
    fail(
      path,
      `the file is truncated: tensor "${last}" ends at byte ${dataStart + cursor} but the file has ${fileSize} bytes`,
    );
  }
  if (cursor < available) {
    fail(path, `${available - cursor} bytes after the last tensor are not described by the header (a damaged or concatenated file)`);
  }
  return { dataStart, metadata, tensors: new Map(entries) };
}

// ---- byte conversions for dtypes libtorch lacks ----------------------------------------------

function f16BitsOfExact(value: number): number {
  // `value` is exactly representable as a normal or zero f16 (true for every FP8 value).
  if (Number.isNaN(value)) return 0x7e00;
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const a = Math.abs(value);
  if (a === 0) return sign;
  if (a === Infinity) return sign | 0x7c00;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  if (2 ** (e + 1) <= a) e += 1;
  const mant = Math.round((a / 2 ** e - 1) * 1024);
  return sign | ((e + 15) << 10) | mant;
}

/** The value of an FP8 E4M3 (the "fn" variant: no infinities, NaN = S.1111.111) code. */
export function f8e4m3Value(code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 0xf;
  const m = code & 0x7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return sign * m * 2 ** -9;
  return sign * (1 + m / 8) * 2 ** (e - 7);
}

let e4m3Table: Uint16Array | undefined;
function f8ToF16Bytes(bytes: Uint8Array, dtype: "F8_E5M2" | "F8_E4M3"): Uint8Array {
  const out = new Uint16Array(bytes.length);
  if (dtype === "F8_E5M2") {
    // E5M2 is the upper byte of an f16.
    for (let i = 0; i < bytes.length; i++) out[i] = bytes[i]! << 8;
  } else {
    if (e4m3Table === undefined) {
      e4m3Table = new Uint16Array(256);
      for (let c = 0; c < 256; c++) e4m3Table[c] = f16BitsOfExact(f8e4m3Value(c)) | (c & 0x80 ? 0x8000 : 0);
    }
    for (let i = 0; i < bytes.length; i++) out[i] = e4m3Table[bytes[i]!]!;
  }
  return new Uint8Array(out.buffer);
}

/** Widens unsigned little-endian integers into wider signed ones (zero high bytes). */
function widen(bytes: Uint8Array, from: number, to: number): Uint8Array {
  const n = bytes.length / from;
  const out = new Uint8Array(n * to);
  for (let i = 0; i < n; i++) out.set(bytes.subarray(i * from, (i + 1) * from), i * to);
  return out;
}

/** Turns the file's bytes of `info` into a tensor; `where` names the file and tensor in errors. */
export function tensorFromSafetensorsBytes(bytes: Uint8Array, info: SafetensorsTensorInfo, where: string): Tensor {
  const n = bytes.length;
  switch (info.dtype) {
    case "U16":
      return fromBytes(widen(bytes, 2, 4), info.shape, "i32");
    case "U32":
      return fromBytes(widen(bytes, 4, 8), info.shape, "i64");
    case "U64":
      for (let i = 7; i < n; i += 8) {
        if (bytes[i]! & 0x80) {
          throw new Error(`${where}: U64 element ${(i - 7) / 8} is ≥ 2^63 and does not fit i64; read its bytes with readRaw()`);
        }
      }
      return fromBytes(bytes, info.shape, "i64");
    case "F8_E5M2":
    case "F8_E4M3":
      return fromBytes(f8ToF16Bytes(bytes, info.dtype), info.shape, "f16");
    case "BOOL":
      for (let i = 0; i < n; i++) {
        if (bytes[i]! > 1) throw new Error(`${where}: BOOL element ${i} holds byte ${bytes[i]}; only 0 and 1 are valid`);
      }
      return fromBytes(bytes, info.shape, "bool");
    default:
      return fromBytes(bytes, info.shape, LOADED_DTYPE[info.dtype]);
  }
}

// ---- reading ----------------------------------------------------------------------------------

const CHUNK = 1 << 30; // readSync/read move at most this many bytes per call

function readHeaderLength(path: string, first8: Uint8Array, got: number, fileSize: number): number {
  if (got < 8) fail(path, `the file has ${fileSize} bytes, fewer than the 8-byte header length`);
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    fail(path, `the header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (is this a safetensors file?)`);
  }
  if (Number(n) + 8 > fileSize) {
    fail(path, `the header length ${n} runs past the end of the file (${fileSize} bytes): truncated or not safetensors`);
  }
  return Number(n);
}

/**
 * A safetensors file opened for lazy reading: the header is parsed at `open`, tensors are read
 * one by one with positioned reads. Call `close()` when done (or use `readSafetensors`).
 */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Byte position of the data buffer in the file. */
  readonly dataStart: number;
  readonly #tensors: Map<string, SafetensorsTensorInfo>;
  #fd: number;

  private constructor(path: string, fd: number, header: ParsedHeader) {
    this.path = path;
    this.#fd = fd;
    this.metadata = header.metadata;
    this.dataStart = header.dataStart;
    this.#tensors = header.tensors;
  }

  static open(path: string): SafetensorsFile {
    const fd = openSync(path, "r");
    try {
      const size = fstatSync(fd).size;
      const first8 = new Uint8Array(8);
      const got = readSync(fd, first8, 0, 8, 0);
      const n = readHeaderLength(path, first8, got, size);
      const headerBytes = new Uint8Array(n);
      const read = readSync(fd, headerBytes, 0, n, 8);
      if (read !== n) fail(path, `could read only ${read} of the ${n} header bytes`);
      return new SafetensorsFile(path, fd, parseSafetensorsHeader(path, headerBytes, size));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Tensor names in file (offset) order. */
  keys(): string[] {
    return [...this.#tensors.keys()];
  }

  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  info(name: string): SafetensorsTensorInfo {
    const info = this.#tensors.get(name);
    if (info === undefined) {
      throw new Error(`safetensors file ${this.path}: no tensor "${name}" (it holds ${this.#tensors.size}: ${preview(this.keys())})`);
    }
    return info;
  }

  /** The tensor's bytes exactly as stored (any dtype, no conversion). */
  readRaw(name: string): RawTensor {
    const info = this.info(name);
    if (this.#fd < 0) throw new Error(`safetensors file ${this.path}: read("${name}") after close()`);
    const [begin, end] = info.dataOffsets;
    const bytes = new Uint8Array(end - begin);
    let done = 0;
    while (done < bytes.length) {
      const len = Math.min(CHUNK, bytes.length - done);
      const got = readSync(this.#fd, bytes, done, len, this.dataStart + begin + done);
      if (got === 0) fail(this.path, `tensor "${name}": the file ended while reading its data (truncated?)`);
      done += got;
    }
    return { dtype: info.dtype, shape: [...info.shape], bytes };
  }

  /** The tensor on the CPU, in the dtype `LOADED_DTYPE` gives for its file dtype. */
  read(name: string): Tensor {
    const raw = this.readRaw(name);
    return tensorFromSafetensorsBytes(raw.bytes, this.info(name), `safetensors file ${this.path}: tensor "${name}"`);
  }

  /** Every tensor (or those named), read one after another. */
  readAll(names: Iterable<string> = this.keys()): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    try {
      for (const name of names) out.set(name, this.read(name));
    } catch (err) {
      for (const t of out.values()) t.dispose();
      throw err;
    }
    return out;
  }

  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }
}

function preview(names: string[]): string {
  return names.length <= 8 ? names.join(", ") : `${names.slice(0, 8).join(", ")}, …`;
}

export interface SafetensorsContents {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

/** Reads a whole file synchronously. */
export function readSafetensorsSync(path: string): SafetensorsContents {
  const file = SafetensorsFile.open(path);
  try {
    return { tensors: file.readAll(), metadata: file.metadata };
  } finally {
    file.close();
  }
}

async function readFully(fh: FileHandle, bytes: Uint8Array, position: number, path: string, what: string): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const len = Math.min(CHUNK, bytes.length - done);
    const { bytesRead } = await fh.read(bytes, done, len, position + done);
    if (bytesRead === 0) fail(path, `${what}: the file ended early (truncated?)`);
    done += bytesRead;
  }
}

/** Reads a whole file with asynchronous positioned reads (one tensor in flight at a time). */
export async function readSafetensors(path: string): Promise<SafetensorsContents> {
  const fh = await openAsync(path, "r");
  const tensors = new Map<string, Tensor>();
  try {
    const size = (await fh.stat()).size;
    const first8 = new Uint8Array(8);
    const { bytesRead } = await fh.read(first8, 0, 8, 0);
    const n = readHeaderLength(path, first8, bytesRead, size);
    const headerBytes = new Uint8Array(n);
    await readFully(fh, headerBytes, 8, path, "header");
    const header = parseSafetensorsHeader(path, headerBytes, size);
    for (const [name, info] of header.tensors) {
      const [begin, end] = info.dataOffsets;
      const bytes = new Uint8Array(end - begin);
      await readFully(fh, bytes, header.dataStart + begin, path, `tensor "${name}"`);
      tensors.set(name, tensorFromSafetensorsBytes(bytes, info, `safetensors file ${path}: tensor "${name}"`));
    }
    return { tensors, metadata: header.metadata };
  } catch (err) {
    for (const t of tensors.values()) t.dispose();
    throw err;
  } finally {
    await fh.close();
  }
}

// ---- writing ----------------------------------------------------------------------------------

export type SafetensorsInput = Map<string, Tensor | RawTensor> | Record<string, Tensor | RawTensor>;

interface PlannedTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  byteLength: number;
  source: Tensor | RawTensor;
}

export interface SafetensorsPlan {
  /** The 8 length bytes followed by the padded JSON header. */
  head: Uint8Array;
  /** Tensors in file order. */
  order: PlannedTensor[];
}

/**
 * Lays out a file as the reference serializer does: descending dtype alignment, then name (by
 * UTF-8 bytes, as Rust compares strings); header padded with spaces to a multiple of 8.
 */
export function planSafetensors(tensors: SafetensorsInput, metadata?: Record<string, string>, where = "writeSafetensors"): SafetensorsPlan {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const planned: PlannedTensor[] = entries.map(([name, source]) => {
    if (name === "__metadata__") throw new Error(`${where}: "__metadata__" is reserved and cannot name a tensor`);
    if (source instanceof Tensor) {
      const shape = source.shape;
      const dtype = SAFETENSORS_DTYPE_OF[source.dtype];
      return { name, dtype, shape: [...shape], byteLength: shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[dtype], source };
    }
    if (!DTYPE_RANK.has(source.dtype)) throw new Error(`${where}: tensor "${name}" has unknown dtype ${JSON.stringify(source.dtype)}`);
    const need = source.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[source.dtype];
    if (need !== source.bytes.length) {
      throw new Error(
        `${where}: tensor "${name}": shape [${source.shape.join(", ")}] of ${source.dtype} needs ${need} bytes, got ${source.bytes.length}`,
      );
    }
    return { name, dtype: source.dtype, shape: [...source.shape], byteLength: need, source };
  });
  const enc = new TextEncoder();
  const nameKey = new Map(planned.map((p) => [p.name, enc.encode(p.name)]));
  planned.sort((a, b) => {
    const r = DTYPE_RANK.get(b.dtype)! - DTYPE_RANK.get(a.dtype)!;
    return r !== 0 ? r : compareBytes(nameKey.get(a.name)!, nameKey.get(b.name)!);
  });
  // Built piece by piece: a JS object would move integer-like names ("0", "12") to the front.
  const parts: string[] = [];
  if (metadata !== undefined) {
    const meta: string[] = [];
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new Error(`${where}: metadata "${k}" must be a string (got ${typeof v}); JSON.stringify it first`);
      meta.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
    }
    parts.push(`"__metadata__":{${meta.join(",")}}`);
  }
  let offset = 0;
  for (const p of planned) {
    const info = { dtype: p.dtype, shape: p.shape, data_offsets: [offset, offset + p.byteLength] };
    parts.push(`${JSON.stringify(p.name)}:${JSON.stringify(info)}`);
    offset += p.byteLength;
  }
  const json = enc.encode(`{${parts.join(",")}}`);
  const padded = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return { head, order: planned };
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function bytesOf(p: PlannedTensor, where: string): Uint8Array {
  if (!(p.source instanceof Tensor)) return p.source.bytes;
  const bytes = toBytes(p.source);
  if (bytes.length !== p.byteLength) throw new Error(`${where}: tensor "${p.name}" gave ${bytes.length} bytes, expected ${p.byteLength}`);
  return bytes;
}

function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
}

/**
 * Writes tensors (and optional string metadata) to `path` atomically: a temporary file in the same
 * directory, one tensor's bytes at a time, fsync, then rename. Tensors may live on any device.
 */
export function writeSafetensorsSync(path: string, tensors: SafetensorsInput, metadata?: Record<string, string>): void {
  const where = `writeSafetensors(${path})`;
  const plan = planSafetensors(tensors, metadata, where);
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, "w");
  let ok = false;
  try {
    writeAllSync(fd, plan.head);
    for (const p of plan.order) writeAllSync(fd, bytesOf(p, where));
    fsyncSync(fd);
    ok = true;
  } finally {
    closeSync(fd);
    if (!ok) unlinkSync(tmp);
  }
  renameSync(tmp, path);
}

function writeAllSync(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, Math.min(CHUNK, bytes.length - done));
}

/** Asynchronous `writeSafetensorsSync`: same layout, same atomic rename. */
export async function writeSafetensors(path: string, tensors: SafetensorsInput, metadata?: Record<string, string>): Promise<void> {
  const where = `writeSafetensors(${path})`;
  const plan = planSafetensors(tensors, metadata, where);
  const tmp = tempPathFor(path);
  const fh = await openAsync(tmp, "w");
  let ok = false;
  try {
    await writeAll(fh, plan.head);
    for (const p of plan.order) await writeAll(fh, bytesOf(p, where));
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await unlinkAsync(tmp);
  }
  await renameAsync(tmp, path);
}

async function writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, Math.min(CHUNK, bytes.length - done));
    done += bytesWritten;
  }
}

/**
 * Reads a safetensors file into a module with its strict `loadStateDict` (missing, unexpected and
 * mis-shaped weights are errors naming the file); the file's tensors are freed afterwards.
 */
export function loadStateDictFromSafetensors(
  module: { loadStateDict(state: Map<string, Tensor>, opts: { source?: string }): unknown },
  path: string,
): void {
  const { tensors } = readSafetensorsSync(path);
  try {
    module.loadStateDict(tensors, { source: path });
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}
