// Reads tensors from a PyTorch checkpoint written by torch.save (the zip format of torch ≥ 1.6:
// `.pt`, `.pth`, transformers' `pytorch_model.bin`), so HPS v2's HPS_v2_compressed.pt, the LAION
// aesthetic predictor's .pth and pytorch_model.bin folders load without a conversion step.
//
// The archive holds `<name>/data.pkl` (a pickle of the object) and `<name>/data/<key>` (one raw
// little-endian storage per key, stored uncompressed). The pickle is interpreted by a small
// virtual machine that knows only what state dicts need: containers, numbers, strings,
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the typed
// storage classes, referenced through persistent ids ("storage", type, key, location, numel). Any
// other global becomes an inert placeholder (never called), so checkpoints with optimizer or
// hyper-parameter objects still yield their tensors; nothing in the file is ever executed.
// Legacy (pre-1.6, non-zip) files are refused with a message. (Generic I/O: src/io would be its
// natural home; it lives here beside its only users.)
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { inflateRawSync } from "node:zlib";
import { fromBytes, type Tensor } from "../../tensor/index.js";
import type { DType } from "../../tensor/tensor.js";

// ---- zip ----------------------------------------------------------------------------------

interface ZipEntry { name: string; method: number; compressedSize: number; size: number; localOffset: number }

class ZipReader {
  readonly entries = new Map<string, ZipEntry>();
  readonly #fd: number;
  constructor(readonly path: string) {
    this.#fd = openSync(path, "r");
    try {
      this.#readDirectory();
    } catch (err) {
      closeSync(this.#fd);
      throw err;
    }
  }
  #read(pos: number, len: number): Buffer {
    const b = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const got = readSync(this.#fd, b, done, len - done, pos + done);
      if (got === 0) throw new Error(`${this.path}: the file ended early (truncated?)`);
      done += got;
    }
    return b;
  }
  #readDirectory(): void {
    const size = fstatSync(this.#fd).size;
    const tailLen = Math.min(size, 65536 + 22);
    const tail = this.#read(size - tailLen, tailLen);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
    if (eocd < 0) {
      throw new Error(`${this.path}: not a zip-format PyTorch checkpoint (torch.save of torch ≥ 1.6); re-save it with a recent torch, or as safetensors`);
    }
    let count = tail.readUInt16LE(eocd + 10);
    let dirOffset = tail.readUInt32LE(eocd + 16);
    if (dirOffset === 0xffffffff || count === 0xffff) {
      // zip64: the locator sits just before the end record
      const loc = eocd - 20;
      if (loc < 0 || tail.readUInt32LE(loc) !== 0x07064b50) throw new Error(`${this.path}: a zip64 archive without its locator`);
      const rec = this.#read(Number(tail.readBigUInt64LE(loc + 8)), 56);
      if (rec.readUInt32LE(0) !== 0x06064b50) throw new Error(`${this.path}: bad zip64 end record`);
      count = Number(rec.readBigUInt64LE(32));
      dirOffset = Number(rec.readBigUInt64LE(48));
    }
    const dirLen = size - dirOffset;
    const dir = this.#read(dirOffset, Math.min(dirLen, size - dirOffset));
    let p = 0;
    for (let n = 0; n < count; n++) {
      if (dir.readUInt32LE(p) !== 0x02014b50) throw new Error(`${this.path}: bad zip central directory entry ${n}`);
      const method = dir.readUInt16LE(p + 10);
      let compressedSize = dir.readUInt32LE(p + 20);
      let size64 = dir.readUInt32LE(p + 24);
      const nameLen = dir.readUInt16LE(p + 28), extraLen = dir.readUInt16LE(p + 30), commentLen = dir.readUInt16LE(p + 32);
      let localOffset = dir.readUInt32LE(p + 42);
      const name = dir.toString("utf8", p + 46, p + 46 + nameLen);
      // zip64 extra field (id 1): 8-byte values for the fields that read 0xFFFFFFFF, in this order
      let e = p + 46 + nameLen;
      const end = e + extraLen;
      while (e + 4 <= end) {
        const id = dir.readUInt16LE(e), len = dir.readUInt16LE(e + 2);
        if (id === 1) {
          let q = e + 4;
          if (size64 === 0xffffffff) { size64 = Number(dir.readBigUInt64LE(q)); q += 8; }
          if (compressedSize === 0xffffffff) { compressedSize = Number(dir.readBigUInt64LE(q)); q += 8; }
          if (localOffset === 0xffffffff) { localOffset = Number(dir.readBigUInt64LE(q)); q += 8; }
        }
        e += 4 + len;
      }
      this.entries.set(name, { name, method, compressedSize, size: size64, localOffset });
      p = end + commentLen;
    }
  }
  /** An entry's bytes, or `len` of them from `offset` (stored entries only). */
  read(name: string, offset = 0, len?: number): Buffer {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: the archive has no ${name}`);
    const head = this.#read(e.localOffset, 30);
    if (head.readUInt32LE(0) !== 0x04034b50) throw new Error(`${this.path}: bad local header for ${name}`);
    const start = e.localOffset + 30 + head.readUInt16LE(26) + head.readUInt16LE(28);
    if (e.method === 0) {
      const n = len ?? e.size - offset;
      if (offset + n > e.size) throw new Error(`${this.path}: ${name} holds ${e.size} bytes, ${offset + n} asked for`);
      return this.#read(start + offset, n);
    }
    if (e.method === 8) {
      const all = inflateRawSync(this.#read(start, e.compressedSize));
      return all.subarray(offset, len === undefined ? undefined : offset + len);
    }
    throw new Error(`${this.path}: ${name} uses zip compression method ${e.method} (only stored and deflate are read)`);
  }
  close(): void {
    closeSync(this.#fd);
  }
}

// ---- pickle -------------------------------------------------------------------------------

/** A storage reference from a persistent id. */
interface StorageRef { kind: "storage"; dtype: DType; elementSize: number; key: string; numel: number }
/** A tensor as _rebuild_tensor_v2 describes it (materialised lazily). */
export interface TensorRef { kind: "tensor"; storage: StorageRef; offset: number; shape: number[]; stride: number[] }
interface Global { kind: "global"; module: string; name: string }
interface Opaque { kind: "opaque"; of: string }
const MARK = Symbol("mark");

const STORAGE_TYPES: Record<string, [DType, number]> = {
  FloatStorage: ["f32", 4], HalfStorage: ["f16", 2], BFloat16Storage: ["bf16", 2], DoubleStorage: ["f64", 8],
  LongStorage: ["i64", 8], IntStorage: ["i32", 4], ShortStorage: ["i16", 2], CharStorage: ["i8", 1],
  ByteStorage: ["u8", 1], BoolStorage: ["bool", 1],
};

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null;
}

function callGlobal(fn: unknown, args: unknown[], where: string): unknown {
  if (!isObj(fn) || fn.kind !== "global") return { kind: "opaque", of: "call" } satisfies Opaque;
  const g = fn as unknown as Global;
  const id = `${g.module}.${g.name}`;
  switch (id) {
    case "collections.OrderedDict":
      return new Map<unknown, unknown>();
    case "torch._utils._rebuild_tensor_v2":
    case "torch._utils._rebuild_tensor": {
      const [storage, offset, shape, stride] = args as [StorageRef, number, number[], number[]];
      if (!isObj(storage) || storage.kind !== "storage") throw new Error(`${where}: ${id} without a storage`);
      return { kind: "tensor", storage, offset, shape: [...shape], stride: [...stride] } satisfies TensorRef;
    }
    case "torch._utils._rebuild_parameter":
    case "torch._utils._rebuild_parameter_with_state":
      return args[0];
    case "_codecs.encode":
      return Buffer.from(String(args[0]), "latin1");
    case "builtins.set":
    case "builtins.frozenset":
      return Array.isArray(args[0]) ? [...(args[0] as unknown[])] : [];
    default:
      return { kind: "opaque", of: id } satisfies Opaque;
  }
}

/** Runs the pickle in `data` (protocols 2–5, the opcodes torch.save emits) and returns the object. */
export function unpickle(data: Buffer, where: string): unknown {
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let p = 0;
  const popMark = (): unknown[] => {
    let i = stack.length - 1;
    while (i >= 0 && stack[i] !== MARK) i--;
    if (i < 0) throw new Error(`${where}: pickle MARK not found`);
    const items = stack.slice(i + 1);
    stack.length = i;
    return items;
  };
  const readLine = (): string => {
    const e = data.indexOf(0x0a, p);
    const s = data.toString("latin1", p, e);
    p = e + 1;
    return s;
  };
  const setItems = (target: unknown, kv: unknown[]) => {
    for (let i = 0; i + 1 < kv.length; i += 2) {
      if (target instanceof Map) target.set(kv[i], kv[i + 1]);
      else if (isObj(target) && !Array.isArray(target)) (target as Record<string, unknown>)[String(kv[i])] = kv[i + 1];
    }
  };
  for (;;) {
    if (p >= data.length) throw new Error(`${where}: the pickle ended without STOP`);
    const op = data[p++]!;
    switch (op) {
      case 0x80: p++; break; // PROTO
      case 0x95: p += 8; break; // FRAME
      case 0x2e: return stack.pop(); // STOP
      case 0x28: stack.push(MARK); break; // MARK
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x29: stack.push([]); break; // EMPTY_TUPLE
      case 0x8f: stack.push([]); break; // EMPTY_SET
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4b: stack.push(data[p]!); p += 1; break; // BININT1
      case 0x4d: stack.push(data.readUInt16LE(p)); p += 2; break; // BININT2
      case 0x4a: stack.push(data.readInt32LE(p)); p += 4; break; // BININT
      case 0x8a: { // LONG1
        const n = data[p++]!;
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[p + i]!);
        if (n > 0 && data[p + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        stack.push(Number(v));
        break;
      }
      case 0x47: stack.push(data.readDoubleBE(p)); p += 8; break; // BINFLOAT
      case 0x49: { const s = readLine(); stack.push(s === "01" ? true : s === "00" ? false : Number(s)); break; } // INT
      case 0x4c: stack.push(Number(readLine().replace(/L$/, ""))); break; // LONG
      case 0x46: stack.push(Number(readLine())); break; // FLOAT
      case 0x8c: { const n = data[p++]!; stack.push(data.toString("utf8", p, p + n)); p += n; break; } // SHORT_BINUNICODE
      case 0x58: { const n = data.readUInt32LE(p); p += 4; stack.push(data.toString("utf8", p, p + n)); p += n; break; } // BINUNICODE
      case 0x8d: { const n = Number(data.readBigUInt64LE(p)); p += 8; stack.push(data.toString("utf8", p, p + n)); p += n; break; } // BINUNICODE8
      case 0x55: { const n = data[p++]!; stack.push(data.toString("latin1", p, p + n)); p += n; break; } // SHORT_BINSTRING
      case 0x54: { const n = data.readUInt32LE(p); p += 4; stack.push(data.toString("latin1", p, p + n)); p += n; break; } // BINSTRING
      case 0x43: { const n = data[p++]!; stack.push(Buffer.from(data.subarray(p, p + n))); p += n; break; } // SHORT_BINBYTES
      case 0x42: { const n = data.readUInt32LE(p); p += 4; stack.push(Buffer.from(data.subarray(p, p + n))); p += n; break; } // BINBYTES
      case 0x8e: { const n = Number(data.readBigUInt64LE(p)); p += 8; stack.push(Buffer.from(data.subarray(p, p + n))); p += n; break; } // BINBYTES8
      case 0x71: memo.set(data[p]!, stack[stack.length - 1]); p += 1; break; // BINPUT
      case 0x72: memo.set(data.readUInt32LE(p), stack[stack.length - 1]); p += 4; break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, stack[stack.length - 1]); break; // MEMOIZE
      case 0x68: stack.push(memo.get(data[p]!)); p += 1; break; // BINGET
      case 0x6a: stack.push(memo.get(data.readUInt32LE(p))); p += 4; break; // LONG_BINGET
      case 0x70: memo.set(Number(readLine()), stack[stack.length - 1]); break; // PUT
      case 0x67: stack.push(memo.get(Number(readLine()))); break; // GET
      case 0x30: stack.pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(stack[stack.length - 1]); break; // DUP
      case 0x74: stack.push(popMark()); break; // TUPLE
      case 0x85: stack.push([stack.pop()]); break; // TUPLE1
      case 0x86: { const b = stack.pop(); const a = stack.pop(); stack.push([a, b]); break; } // TUPLE2
      case 0x87: { const c = stack.pop(); const b = stack.pop(); const a = stack.pop(); stack.push([a, b, c]); break; } // TUPLE3
      case 0x6c: stack.push(popMark()); break; // LIST
      case 0x64: { const kv = popMark(); const m = new Map(); setItems(m, kv); stack.push(m); break; } // DICT
      case 0x61: { const v = stack.pop(); const l = stack[stack.length - 1]; if (Array.isArray(l)) l.push(v); break; } // APPEND
      case 0x65: { const items = popMark(); const l = stack[stack.length - 1]; if (Array.isArray(l)) l.push(...items); break; } // APPENDS
      case 0x90: { const items = popMark(); const s = stack[stack.length - 1]; if (Array.isArray(s)) s.push(...items); break; } // ADDITEMS
      case 0x73: { const v = stack.pop(); const k = stack.pop(); setItems(stack[stack.length - 1], [k, v]); break; } // SETITEM
      case 0x75: { const kv = popMark(); setItems(stack[stack.length - 1], kv); break; } // SETITEMS
      case 0x63: { const module = readLine(); const name = readLine(); stack.push({ kind: "global", module, name } satisfies Global); break; } // GLOBAL
      case 0x93: { const name = stack.pop() as string; const module = stack.pop() as string; stack.push({ kind: "global", module, name } satisfies Global); break; } // STACK_GLOBAL
      case 0x52: { const args = stack.pop() as unknown[]; const fn = stack.pop(); stack.push(callGlobal(fn, args, where)); break; } // REDUCE
      case 0x81: { const args = stack.pop() as unknown[]; const cls = stack.pop(); stack.push(callGlobal(cls, args, where)); break; } // NEWOBJ
      case 0x92: { stack.pop(); const args = stack.pop() as unknown[]; const cls = stack.pop(); stack.push(callGlobal(cls, args, where)); break; } // NEWOBJ_EX
      case 0x62: { // BUILD: state onto the object (OrderedDict state is a dict of attributes; ignored)
        const state = stack.pop();
        const obj = stack[stack.length - 1];
        if (isObj(obj) && (obj as { kind?: unknown }).kind === "opaque" && isObj(state)) (obj as Record<string, unknown>).state = state;
        break;
      }
      case 0x51: { // BINPERSID: ("storage", storage_type, key, location, numel)
        const pid = stack.pop() as unknown[];
        if (!Array.isArray(pid) || pid[0] !== "storage") throw new Error(`${where}: unknown persistent id ${JSON.stringify(pid?.[0])}`);
        const type = pid[1] as Global;
        const dt = STORAGE_TYPES[type?.name ?? ""];
        if (!dt) throw new Error(`${where}: storage type ${type?.module}.${type?.name} is not supported`);
        stack.push({ kind: "storage", dtype: dt[0], elementSize: dt[1], key: String(pid[2]), numel: Number(pid[4]) } satisfies StorageRef);
        break;
      }
      default:
        throw new Error(`${where}: pickle opcode 0x${op.toString(16)} at byte ${p - 1} is not supported`);
    }
  }
}

// ---- tensors ------------------------------------------------------------------------------

function isTensorRef(v: unknown): v is TensorRef {
  return isObj(v) && (v as { kind?: unknown }).kind === "tensor";
}

/** Every tensor in a (nested) state dict, by dotted key, in file order. */
function collectTensors(obj: unknown, prefix: string, out: Map<string, TensorRef>): void {
  if (isTensorRef(obj)) {
    out.set(prefix, obj);
    return;
  }
  if (obj instanceof Map) {
    for (const [k, v] of obj) collectTensors(v, prefix ? `${prefix}.${String(k)}` : String(k), out);
  }
}

export interface TorchCheckpoint {
  /** The tensors of the state dict: `state_dict` (or `model`) of a training checkpoint, else the top-level dict. */
  tensors: Map<string, Tensor>;
  /** Top-level keys that are not tensors (epoch, name, optimizer, …), for messages. */
  otherKeys: string[];
}

/**
 * Reads a torch.save checkpoint's state dict into CPU tensors (their own dtype; views made
 * contiguous). A training checkpoint's `state_dict` entry is used when present.
 */
export function readTorchCheckpoint(path: string): TorchCheckpoint {
  const zip = new ZipReader(path);
  try {
    const pklName = [...zip.entries.keys()].find((n) => n.endsWith("/data.pkl") || n === "data.pkl");
    if (!pklName) throw new Error(`${path}: a zip without data.pkl is not a torch.save checkpoint`);
    const root = pklName.slice(0, pklName.length - "data.pkl".length);
    const byteorder = zip.entries.has(`${root}byteorder`) ? zip.read(`${root}byteorder`).toString("latin1").trim() : "little";
    if (byteorder !== "little") throw new Error(`${path}: a ${byteorder}-endian checkpoint; only little-endian is read`);
    const obj = unpickle(zip.read(pklName), path);
    let dict: unknown = obj;
    if (obj instanceof Map) {
      for (const k of ["state_dict", "model", "module"]) {
        const v = obj.get(k);
        if (v instanceof Map) { dict = v; break; }
      }
    }
    const refs = new Map<string, TensorRef>();
    collectTensors(dict, "", refs);
    const otherKeys = obj instanceof Map ? [...obj.keys()].map(String).filter((k) => !isTensorRef(obj.get(k))) : [];
    const tensors = new Map<string, Tensor>();
    try {
      for (const [name, ref] of refs) tensors.set(name, materialise(zip, root, ref, `${path}: tensor "${name}"`));
    } catch (err) {
      for (const t of tensors.values()) t.dispose();
      throw err;
    }
    return { tensors, otherKeys };
  } finally {
    zip.close();
  }
}

function materialise(zip: ZipReader, root: string, ref: TensorRef, where: string): Tensor {
  const es = ref.storage.elementSize;
  const numel = ref.shape.reduce((a, b) => a * b, 1);
  const entry = `${root}data/${ref.storage.key}`;
  // contiguous (row-major) strides read one byte range; anything else is gathered element by element
  let contiguous = true;
  let expect = 1;
  for (let d = ref.shape.length - 1; d >= 0; d--) {
    if (ref.shape[d] !== 1 && ref.stride[d] !== expect) contiguous = false;
    expect *= ref.shape[d]!;
  }
  if (numel === 0) return fromBytes(new Uint8Array(0), ref.shape, ref.storage.dtype);
  let bytes: Uint8Array;
  if (contiguous) {
    bytes = new Uint8Array(zip.read(entry, ref.offset * es, numel * es));
  } else {
    let maxIndex = 0;
    for (let d = 0; d < ref.shape.length; d++) maxIndex += (ref.shape[d]! - 1) * ref.stride[d]!;
    const src = zip.read(entry, ref.offset * es, (maxIndex + 1) * es);
    bytes = new Uint8Array(numel * es);
    const idx = new Array<number>(ref.shape.length).fill(0);
    for (let i = 0; i < numel; i++) {
      let off = 0;
      for (let d = 0; d < idx.length; d++) off += idx[d]! * ref.stride[d]!;
      src.copy(bytes, i * es, off * es, off * es + es);
      for (let d = idx.length - 1; d >= 0; d--) {
        if (++idx[d]! < ref.shape[d]!) break;
        idx[d] = 0;
      }
    }
  }
  if (bytes.length !== numel * es) throw new Error(`${where}: read ${bytes.length} bytes, expected ${numel * es}`);
  return fromBytes(bytes, ref.shape, ref.storage.dtype);
}
