// A SentencePiece unigram model read from its `spiece.model` (a protobuf ModelProto), encoding
// as SentencePieceProcessor.encode does:
//
//   1. normalise: the precompiled charsmap (a darts-clone double-array trie over UTF-8 bytes that
//      maps the longest matching prefix to a replacement; for nmt_nfkc it is NFKC plus NMT's
//      rules), leading / repeated / trailing spaces removed, "▁" dummy prefix, spaces → "▁";
//   2. Viterbi over the pieces (NORMAL and USER_DEFINED, scores as stored; a character no piece
//      covers becomes <unk> with score min_score − 10); consecutive unknowns merge into one <unk>.
//
// Scores add in float32 as in the C++ code, so ties break the same way (strictly better wins,
// earlier start first). Not implemented: BPE / word / char model types, byte fallback, sampling,
// n-best, a normalization_rule_tsv without a precompiled charsmap (an error), the separate
// denormalizer. Without a charsmap (identity normalisation) only the whitespace rules apply.
import { readFileSync } from "node:fs";

export const SPACE_SYMBOL = "\u2581";

export enum PieceType { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 }

export interface Piece { piece: string; score: number; type: PieceType }

export interface NormalizerSpec {
  name: string;
  precompiledCharsmap: Uint8Array | null;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

export interface SentencePieceModelProto {
  pieces: Piece[];
  /** trainer_spec.model_type: 1 unigram, 2 BPE, 3 word, 4 char. */
  modelType: number;
  unkId: number;
  byteFallback: boolean;
  treatWhitespaceAsSuffix: boolean;
  normalizer: NormalizerSpec;
}

// ---- protobuf (only what ModelProto needs) ----------------------------------------------------

class ProtoReader {
  pos = 0;
  constructor(readonly buf: Uint8Array, readonly where: string) {}
  get done(): boolean { return this.pos >= this.buf.length; }
  varint(): number {
    let result = 0, shift = 0;
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error(`${this.where}: truncated protobuf varint`);
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
      if (shift > 63) throw new Error(`${this.where}: malformed protobuf varint`);
    }
  }
  bytes(): Uint8Array {
    const n = this.varint();
    if (this.pos + n > this.buf.length) throw new Error(`${this.where}: truncated protobuf field`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  float(): number {
    if (this.pos + 4 > this.buf.length) throw new Error(`${this.where}: truncated protobuf float`);
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }
  /** Reads a tag and calls `field(number, wireType)`; skips what `field` returns false for. */
  each(field: (num: number, wire: number) => boolean): void {
    while (!this.done) {
      const tag = this.varint();
      const num = Math.floor(tag / 8), wire = tag & 7;
      if (field(num, wire)) continue;
      if (wire === 0) this.varint();
      else if (wire === 1) this.pos += 8;
      else if (wire === 2) this.bytes();
      else if (wire === 5) this.pos += 4;
      else throw new Error(`${this.where}: unsupported protobuf wire type ${wire} (field ${num})`);
    }
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: false });

/** Parses a serialized sentencepiece ModelProto. */
export function parseModelProto(buf: Uint8Array, where = "spiece.model"): SentencePieceModelProto {
  const pieces: Piece[] = [];
  let modelType = 1, unkId = 0, byteFallback = false, suffix = false;
  const normalizer: NormalizerSpec = { name: "", precompiledCharsmap: null, addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true };
  const outer = new ProtoReader(buf, where);
  outer.each((num, wire) => {
    if (wire !== 2 || num < 1 || num > 3) return false;
    const r = new ProtoReader(outer.bytes(), where);
    if (num === 1) { // SentencePiece { piece = 1; score = 2; type = 3 }
      const p: Piece = { piece: "", score: 0, type: PieceType.NORMAL };
      r.each((n, w) => {
        if (n === 1 && w === 2) { p.piece = utf8.decode(r.bytes()); return true; }
        if (n === 2 && w === 5) { p.score = r.float(); return true; }
        if (n === 3 && w === 0) { p.type = r.varint() as PieceType; return true; }
        return false;
      });
      pieces.push(p);
    } else if (num === 2) { // TrainerSpec
      r.each((n, w) => {
        if (w !== 0) return false;
        if (n === 3) modelType = r.varint();
        else if (n === 40) unkId = r.varint();
        else if (n === 35) byteFallback = r.varint() !== 0;
        else if (n === 24) suffix = r.varint() !== 0;
        else return false;
        return true;
      });
    } else { // NormalizerSpec
      r.each((n, w) => {
        if (n === 1 && w === 2) { normalizer.name = utf8.decode(r.bytes()); return true; }
        if (n === 2 && w === 2) { normalizer.precompiledCharsmap = r.bytes().slice(); return true; }
        if (w !== 0) return false;
        if (n === 3) normalizer.addDummyPrefix = r.varint() !== 0;
        else if (n === 4) normalizer.removeExtraWhitespaces = r.varint() !== 0;
        else if (n === 5) normalizer.escapeWhitespaces = r.varint() !== 0;
        else return false;
        return true;
      });
    }
    return true;
  });
  if (pieces.length === 0) throw new Error(`${where}: no pieces found; not a SentencePiece model file`);
  return { pieces, modelType, unkId, byteFallback, treatWhitespaceAsSuffix: suffix, normalizer };
}

// ---- normaliser: the precompiled charsmap -------------------------------------------------------

/**
 * sentencepiece's precompiled charsmap: uint32 trie size, a darts-clone double array of that many
 * bytes (uint32 units), then NUL-terminated replacement strings indexed by the trie's values.
 */
class CharsMap {
  private readonly units: Uint32Array;
  private readonly strings: Uint8Array;
  constructor(blob: Uint8Array, where: string) {
    if (blob.length < 4) throw new Error(`${where}: precompiled_charsmap is too short`);
    const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const trieBytes = view.getUint32(0, true);
    if (trieBytes % 4 !== 0 || 4 + trieBytes > blob.length) throw new Error(`${where}: precompiled_charsmap has a bad trie size ${trieBytes}`);
    this.units = new Uint32Array(trieBytes / 4);
    for (let i = 0; i < this.units.length; i++) this.units[i] = view.getUint32(4 + 4 * i, true);
    this.strings = blob.subarray(4 + trieBytes);
  }
  /** The longest prefix of bytes[start…] in the trie: [its length, the replacement bytes], or null. */
  longestPrefix(bytes: Uint8Array, start: number): [number, Uint8Array] | null {
    const u = this.units;
    // darts-clone unit fields
    const offset = (x: number) => (x >>> 10) << ((x & (1 << 9)) >>> 6);
    const label = (x: number) => x & ((1 << 31) | 0xff);
    const hasLeaf = (x: number) => ((x >>> 8) & 1) === 1;
    const value = (x: number) => x & 0x7fffffff;
    let pos = 0;
    let unit = u[pos]!;
    pos ^= offset(unit);
    let best: [number, number] | null = null;
    for (let i = start; i < bytes.length; i++) {
      const c = bytes[i]!;
      if (c === 0) break;
      pos ^= c;
      unit = u[pos]!;
      if (unit === undefined || (label(unit) >>> 0) !== c) break;
      pos ^= offset(unit);
      if (hasLeaf(unit)) best = [i - start + 1, value(u[pos]!)];
    }
    if (best === null) return null;
    const from = best[1];
    let end = from;
    while (end < this.strings.length && this.strings[end] !== 0) end++;
    return [best[0], this.strings.subarray(from, end)];
  }
}

/** Byte length of the UTF-8 sequence starting with `b` (1 for a stray continuation byte). */
function utf8Length(b: number): number {
  return b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
}

const encoder = new TextEncoder();
const SPACE = 0x20;

/** sentencepiece's Normalizer::Normalize (without user-defined-symbol prefix matching). */
export function normalize(text: string, spec: NormalizerSpec, charsMap: CharsMap | null, whitespaceAsSuffix = false): string {
  const input = encoder.encode(text);
  // normalize_prefix: the charsmap's longest match, else one UTF-8 character unchanged
  const prefix = (pos: number): [Uint8Array, number] => {
    const hit = charsMap?.longestPrefix(input, pos) ?? null;
    if (hit !== null) return [hit[1], hit[0]];
    const n = Math.min(utf8Length(input[pos]!), input.length - pos);
    return [input.subarray(pos, pos + n), n];
  };
  let pos = 0;
  if (spec.removeExtraWhitespaces) {
    while (pos < input.length) {
      const [rep, n] = prefix(pos);
      if (!(rep.length === 1 && rep[0] === SPACE)) break;
      pos += n;
    }
  }
  if (pos >= input.length) return "";
  const out: number[] = [];
  const spaceBytes = spec.escapeWhitespaces ? Array.from(encoder.encode(SPACE_SYMBOL)) : [SPACE];
  if (!whitespaceAsSuffix && spec.addDummyPrefix) out.push(...spaceBytes);
  let prevSpace = spec.removeExtraWhitespaces;
  while (pos < input.length) {
    const [rep, n] = prefix(pos);
    let k = 0;
    while (prevSpace && k < rep.length && rep[k] === SPACE) k++;
    if (k < rep.length) {
      for (let i = k; i < rep.length; i++) {
        if (rep[i] === SPACE && spec.escapeWhitespaces) out.push(...spaceBytes);
        else out.push(rep[i]!);
      }
      prevSpace = rep[rep.length - 1] === SPACE;
    }
    pos += n;
    prevSpace = prevSpace && spec.removeExtraWhitespaces;
  }
  if (whitespaceAsSuffix && spec.addDummyPrefix) out.push(...spaceBytes);
  if (spec.removeExtraWhitespaces) {
    const sl = spaceBytes.length;
    while (out.length >= sl && spaceBytes.every((b, i) => out[out.length - sl + i] === b)) out.length -= sl;
  }
  return utf8.decode(new Uint8Array(out));
}

// ---- the unigram model -----------------------------------------------------------------------

const UNK_PENALTY = 10;

/** A loaded unigram SentencePiece model: normalise + Viterbi, pieces and ids. */
export class SentencePieceUnigram {
  readonly pieces: Piece[];
  readonly unkId: number;
  private readonly ids = new Map<string, number>();
  private readonly charsMap: CharsMap | null;
  private readonly minScore: number;
  private readonly maxScore: number;
  private readonly maxPieceChars: number;

  constructor(readonly proto: SentencePieceModelProto, where = "spiece.model") {
    if (proto.modelType !== 1) throw new Error(`${where}: model_type ${proto.modelType} is not a unigram model (only unigram SentencePiece models, such as T5's, are supported)`);
    if (proto.byteFallback) throw new Error(`${where}: byte_fallback models are not supported`);
    this.pieces = proto.pieces;
    this.unkId = proto.unkId;
    if (this.pieces[this.unkId]?.type !== PieceType.UNKNOWN) throw new Error(`${where}: unk_id ${this.unkId} is not an UNKNOWN piece`);
    let min = Infinity, max = -Infinity, longest = 1;
    this.pieces.forEach((p, i) => {
      if (!this.ids.has(p.piece)) this.ids.set(p.piece, i);
      if (p.type === PieceType.NORMAL) { min = Math.min(min, p.score); max = Math.max(max, p.score); }
      if (p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED) longest = Math.max(longest, [...p.piece].length);
    });
    this.minScore = min;
    this.maxScore = max;
    this.maxPieceChars = longest;
    const blob = proto.normalizer.precompiledCharsmap;
    this.charsMap = blob && blob.length > 0 ? new CharsMap(blob, where) : null;
  }

  static fromFile(path: string): SentencePieceUnigram {
    const buf = new Uint8Array(readFileSync(path));
    return new SentencePieceUnigram(parseModelProto(buf, path), path);
  }

  get size(): number { return this.pieces.length; }

  /** The id of a piece (unk_id when absent, as sp.piece_to_id). */
  pieceToId(piece: string): number {
    return this.ids.get(piece) ?? this.unkId;
  }

  normalize(text: string): string {
    return normalize(text, this.proto.normalizer, this.charsMap, this.proto.treatWhitespaceAsSuffix);
  }

  /** SentencePieceProcessor.encode(text, out_type=str) then ids: [piece, id] per token. */
  encode(text: string): { piece: string; id: number }[] {
    const chars = [...this.normalize(text)];
    const n = chars.length;
    if (n === 0) return [];
    const unkScore = Math.fround(this.minScore - UNK_PENALTY);
    // best[i]: best score of a segmentation of chars[0..i); from[i]: start of its last piece
    const best = new Float64Array(n + 1).fill(-Infinity);
    const from = new Int32Array(n + 1).fill(-1);
    const pieceAt = new Int32Array(n + 1).fill(-1);
    best[0] = 0;
    for (let start = 0; start < n; start++) {
      if (from[start] === -1 && start !== 0) continue;
      let hasSingle = false;
      let key = "";
      for (let len = 1; len <= this.maxPieceChars && start + len <= n; len++) {
        key += chars[start + len - 1]!;
        const id = this.ids.get(key);
        if (id === undefined) continue;
        const p = this.pieces[id]!;
        if (p.type !== PieceType.NORMAL && p.type !== PieceType.USER_DEFINED) continue;
        const score = p.type === PieceType.USER_DEFINED ? Math.fround(len * this.maxScore - 0.1) : p.score;
        const candidate = Math.fround(best[start]! + score);
        const end = start + len;
        if (from[end] === -1 || candidate > best[end]!) { best[end] = candidate; from[end] = start; pieceAt[end] = id; }
        if (len === 1) hasSingle = true;
      }
      if (!hasSingle) {
        const candidate = Math.fround(best[start]! + unkScore);
        const end = start + 1;
        if (from[end] === -1 || candidate > best[end]!) { best[end] = candidate; from[end] = start; pieceAt[end] = this.unkId; }
      }
    }
    const out: { piece: string; id: number }[] = [];
    for (let end = n; end > 0; end = from[end]!) {
      out.push({ piece: chars.slice(from[end]!, end).join(""), id: pieceAt[end]! });
    }
    out.reverse();
    // consecutive unknowns become one <unk> (SentencePieceProcessor does this after Viterbi)
    const merged: { piece: string; id: number }[] = [];
    for (const t of out) {
      const last = merged[merged.length - 1];
      if (last && last.id === this.unkId && t.id === this.unkId) last.piece += t.piece;
      else merged.push({ ...t });
    }
    return merged;
  }
}
