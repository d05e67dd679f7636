// The CLIP tokenizer: byte-level BPE of openai/CLIP's `simple_tokenizer.py`, with the text cleaning
// transformers' `CLIPTokenizer` applies when ftfy is absent (what Stable Diffusion pipelines get by
// default):
//   1. drop NUL, U+FFFD and control/format characters (category C*, except tab, LF, CR); map
//      whitespace (space, tab, LF, CR, Zs) to a space;
//   2. surround CJK ideographs with spaces (BERT's BasicTokenizer rule);
//   3. NFC-normalize, split on whitespace, lowercase, rejoin with single spaces;
//   4. split with CLIP's pattern  <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
//      (case-insensitive), map each piece's UTF-8 bytes to CLIP's printable byte alphabet, apply BPE.
// Not done: ftfy's mojibake repair and html.unescape of the original CLIP code (rarely matters for
// prompts). Encodings are checked against an independent Python implementation
// (scripts/golden/tokenizer/make_golden.py).
//
// Vocabulary (49,408 ids): 256 byte characters, the same with "</w>" (end of word), the first
// 48,894 merges of the merges file joined, then <|startoftext|> = 49406 and <|endoftext|> = 49407.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";

export const CLIP_BOS = "<|startoftext|>";
export const CLIP_EOS = "<|endoftext|>";
/** How many merges CLIP uses from the merges file: 49152 − 256 − 2. */
export const CLIP_MERGE_COUNT = 49152 - 256 - 2;
const DEFAULT_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz";

/** CLIP's (= GPT-2's) reversible map from bytes to printable characters, in vocabulary order. */
function byteAlphabet(): { byteToChar: string[]; order: number[] } {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const isPrintable = new Set(printable);
  const byteToChar = new Array<string>(256);
  const order = [...printable];
  for (const b of printable) byteToChar[b] = String.fromCharCode(b);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (isPrintable.has(b)) continue;
    byteToChar[b] = String.fromCharCode(256 + extra++);
    order.push(b);
  }
  return { byteToChar, order };
}

const { byteToChar: BYTE_TO_CHAR, order: BYTE_ORDER } = byteAlphabet();
const CHAR_TO_BYTE = new Map<string, number>(BYTE_TO_CHAR.map((c, b) => [c, b]));

const PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) || (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

const WHITESPACE_CHAR = /^[ \t\n\r\p{Zs}]$/u;
const CONTROL_CHAR = /^\p{C}$/u;

/** Step 1–3 above: the cleaned, lowercased text the pattern runs on. */
export function cleanClipText(text: string): string {
  let out = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0x20 && cp < 0x7f) out += ch; // printable ASCII: the common case
    else if (WHITESPACE_CHAR.test(ch)) out += " ";
    else if (cp === 0 || cp === 0xfffd || CONTROL_CHAR.test(ch)) continue;
    else if (isCjk(cp)) out += ` ${ch} `;
    else out += ch;
  }
  return out
    .normalize("NFC")
    .split(/\s+/u)
    .filter((w) => w.length > 0)
    .map((w) => w.toLowerCase())
    .join(" ");
}

export type PaddingMode = "max_length" | "longest" | "none";

export interface EncodeBatchOptions {
  /** Sequence length with the start and end tokens (default: the tokenizer's modelMaxLength, 77). */
  maxLength?: number;
  /** "max_length" (default) pads every row to maxLength, "longest" to the longest row, "none" not at all. */
  padding?: PaddingMode;
  /** Cut rows longer than maxLength, keeping the end token last (default true). */
  truncation?: boolean;
}

export interface EncodedBatch {
  /** One row per text, start and end tokens included. */
  ids: number[][];
  /** 1 for real tokens (start and end included), 0 for padding. */
  attentionMask: number[][];
  /** Row-major copy of `ids` when every row has the same length (padding "max_length"/"longest"), for tensor(). */
  flat?: Int32Array;
  /** [rows, length] of `flat`. */
  shape?: [number, number];
}

export interface ClipTokenizerOptions {
  /** Padding token: its text or id. Default <|endoftext|> (SD 1.x); SD 2.x uses "!" (id 0). */
  padToken?: string | number;
  /** Default sequence length of encodeBatch (77 for every CLIP text encoder). */
  modelMaxLength?: number;
}

/** The package root's assets/tokenizer directory (works from src/ under tsx and from dist/src/). */
export function defaultTokenizerAssetPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const candidate = join(dir, "assets", "tokenizer", DEFAULT_VOCAB_FILE);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(
    `CLIP tokenizer: assets/tokenizer/${DEFAULT_VOCAB_FILE} was not found above ${fileURLToPath(import.meta.url)}; ` +
      "reinstall the package or pass the merges file path to ClipTokenizer.fromFile(path)",
  );
}

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly modelMaxLength: number;
  readonly #encoder: Map<string, number>;
  readonly #decoder: string[];
  readonly #merges: [string, string][];
  readonly #ranks: Map<string, number>;
  readonly #cache = new Map<string, number[]>();
  /**
   * A pad token other than <|endoftext|> (SDXL's and SD 2's "!") is an added special token in
   * transformers: the text is split at it before BPE and it maps to its own id ("dunes!" →
   * "dunes", "!" (id 0), not the "!</w>" of BPE).
   */
  readonly #splitToken: string | null;

  /**
   * From a vocabulary (token → id) and ordered merges. Most callers want `fromFile` (CLIP's merges
   * file) or `fromFolder` (a diffusers/transformers tokenizer folder).
   */
  constructor(encoder: Map<string, number>, merges: [string, string][], opts: ClipTokenizerOptions = {}) {
    this.#encoder = encoder;
    this.#decoder = [];
    for (const [tok, id] of encoder) this.#decoder[id] = tok;
    this.#merges = merges;
    this.#ranks = new Map(merges.map(([a, b], i) => [`${a} ${b}`, i]));
    const need = (tok: string): number => {
      const id = encoder.get(tok);
      if (id === undefined) throw new Error(`CLIP tokenizer: the vocabulary lacks ${tok}`);
      return id;
    };
    this.bosId = need(CLIP_BOS);
    this.eosId = need(CLIP_EOS);
    const pad = opts.padToken ?? CLIP_EOS;
    if (typeof pad === "number") {
      if (this.#decoder[pad] === undefined) throw new Error(`CLIP tokenizer: pad id ${pad} is not in the vocabulary`);
      this.padId = pad;
    } else {
      const id = encoder.get(pad);
      if (id === undefined) throw new Error(`CLIP tokenizer: pad token ${JSON.stringify(pad)} is not in the vocabulary`);
      this.padId = id;
    }
    const padText = this.#decoder[this.padId]!;
    this.#splitToken = this.padId === this.eosId || this.padId === this.bosId ? null : padText;
    this.modelMaxLength = opts.modelMaxLength ?? 77;
    if (!Number.isInteger(this.modelMaxLength) || this.modelMaxLength < 2) {
      throw new Error(`CLIP tokenizer: modelMaxLength must be an integer ≥ 2 (got ${this.modelMaxLength})`);
    }
    this.#cache.set(CLIP_BOS, [this.bosId]);
    this.#cache.set(CLIP_EOS, [this.eosId]);
  }

  /** From CLIP's gzipped merges file (default: the copy shipped in assets/tokenizer/). */
  static fromFile(path: string = defaultTokenizerAssetPath(), opts: ClipTokenizerOptions = {}): ClipTokenizer {
    let text: string;
    try {
      const raw = readFileSync(path);
      text = (path.endsWith(".gz") ? gunzipSync(raw) : raw).toString("utf8");
    } catch (err) {
      throw new Error(`CLIP tokenizer: cannot read merges file ${path}: ${(err as Error).message}`);
    }
    const merges = parseMerges(text, path);
    if (merges.length !== CLIP_MERGE_COUNT) {
      throw new Error(`CLIP tokenizer: ${path} holds ${merges.length} merges, CLIP needs ${CLIP_MERGE_COUNT}`);
    }
    const vocab: string[] = BYTE_ORDER.map((b) => BYTE_TO_CHAR[b]!);
    for (let i = 0; i < 256; i++) vocab.push(`${vocab[i]}</w>`);
    for (const [a, b] of merges) vocab.push(a + b);
    vocab.push(CLIP_BOS, CLIP_EOS);
    return new ClipTokenizer(new Map(vocab.map((tok, id) => [tok, id])), merges, opts);
  }

  /**
   * From a diffusers `tokenizer/` folder (vocab.json, merges.txt and, optionally,
   * tokenizer_config.json / special_tokens_map.json for the pad token and model_max_length).
   */
  static fromFolder(dir: string, opts: ClipTokenizerOptions = {}): ClipTokenizer {
    const readJson = (name: string, required: boolean): Record<string, unknown> | undefined => {
      const path = join(dir, name);
      if (!existsSync(path)) {
        if (required) throw new Error(`CLIP tokenizer: ${path} is missing (a tokenizer folder needs vocab.json and merges.txt)`);
        return undefined;
      }
      try {
        return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
      } catch (err) {
        throw new Error(`CLIP tokenizer: ${path} is not valid JSON: ${(err as Error).message}`);
      }
    };
    const vocabJson = readJson("vocab.json", true)!;
    const encoder = new Map<string, number>();
    for (const [tok, id] of Object.entries(vocabJson)) {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
        throw new Error(`CLIP tokenizer: ${join(dir, "vocab.json")}: token ${JSON.stringify(tok)} has id ${JSON.stringify(id)}`);
      }
      encoder.set(tok, id);
    }
    const mergesPath = join(dir, "merges.txt");
    if (!existsSync(mergesPath)) throw new Error(`CLIP tokenizer: ${mergesPath} is missing`);
    const merges = parseMerges(readFileSync(mergesPath, "utf8"), mergesPath);
    const config = readJson("tokenizer_config.json", false) ?? {};
    const special = readJson("special_tokens_map.json", false) ?? {};
    const tokenText = (v: unknown): string | undefined =>
      typeof v === "string" ? v : v !== null && typeof v === "object" && typeof (v as { content?: unknown }).content === "string"
        ? (v as { content: string }).content
        : undefined;
    const padToken = opts.padToken ?? tokenText(config.pad_token) ?? tokenText(special.pad_token) ?? CLIP_EOS;
    const maxLen = config.model_max_length;
    const modelMaxLength = opts.modelMaxLength ?? (typeof maxLen === "number" && maxLen <= 4096 ? maxLen : 77);
    return new ClipTokenizer(encoder, merges, { padToken, modelMaxLength });
  }

  /** Writes a diffusers/transformers-compatible tokenizer folder (CLIPTokenizer). */
  saveFolder(dir: string): void {
    mkdirSync(dir, { recursive: true });
    const entries = [...this.#encoder.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    writeFileSync(join(dir, "vocab.json"), `${JSON.stringify(Object.fromEntries(entries), null, 2)}\n`);
    writeFileSync(join(dir, "merges.txt"), `#version: 0.2\n${this.#merges.map(([a, b]) => `${a} ${b}`).join("\n")}\n`);
    const pad = this.#decoder[this.padId]!;
    const special = { bos_token: CLIP_BOS, eos_token: CLIP_EOS, pad_token: pad, unk_token: CLIP_EOS };
    writeFileSync(join(dir, "special_tokens_map.json"), `${JSON.stringify(special, null, 2)}\n`);
    const config = {
      ...special,
      add_prefix_space: false,
      clean_up_tokenization_spaces: true,
      do_lower_case: true,
      errors: "replace",
      model_max_length: this.modelMaxLength,
      tokenizer_class: "CLIPTokenizer",
    };
    writeFileSync(join(dir, "tokenizer_config.json"), `${JSON.stringify(config, null, 2)}\n`);
  }

  get vocabSize(): number {
    return this.#encoder.size;
  }

  /** The id of a token string (undefined when absent). */
  tokenToId(token: string): number | undefined {
    return this.#encoder.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.#decoder[id];
  }

  /** BPE token strings of a text, without start/end tokens. */
  tokenize(text: string): string[] {
    return this.encode(text, { addSpecialTokens: false }).map((id) => this.#decoder[id]!);
  }

  /** Token ids of one text: [<|startoftext|>, ..., <|endoftext|>] unless addSpecialTokens is false. No truncation. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    const ids: number[] = [];
    if (opts.addSpecialTokens !== false) ids.push(this.bosId);
    const pieces = this.#splitToken === null ? [text] : text.split(this.#splitToken);
    pieces.forEach((piece, i) => {
      if (i > 0) ids.push(this.padId);
      for (const match of cleanClipText(piece).matchAll(PATTERN)) {
        for (const id of this.#bpeIds(match[0])) ids.push(id);
      }
    });
    if (opts.addSpecialTokens !== false) ids.push(this.eosId);
    return ids;
  }

  /** Encodes texts to fixed-length rows (CLIP text encoders take 77 tokens). */
  encodeBatch(texts: string[], opts: EncodeBatchOptions = {}): EncodedBatch {
    const maxLength = opts.maxLength ?? this.modelMaxLength;
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new Error(`encodeBatch: maxLength must be an integer ≥ 2 (got ${maxLength})`);
    const padding = opts.padding ?? "max_length";
    const truncation = opts.truncation ?? true;
    const rows = texts.map((text) => {
      const ids = this.encode(text);
      if (ids.length > maxLength && truncation) {
        ids.length = maxLength - 1;
        ids.push(this.eosId);
      }
      return ids;
    });
    const target =
      padding === "max_length" ? Math.max(maxLength, ...rows.map((r) => r.length)) : padding === "longest" ? Math.max(0, ...rows.map((r) => r.length)) : 0;
    const ids: number[][] = [];
    const attentionMask: number[][] = [];
    for (const row of rows) {
      const n = row.length;
      const padTo = Math.max(n, target);
      const mask = new Array<number>(padTo).fill(0, n).fill(1, 0, n);
      for (let i = n; i < padTo; i++) row.push(this.padId);
      ids.push(row);
      attentionMask.push(mask);
    }
    const width = ids[0]?.length ?? 0;
    const result: EncodedBatch = { ids, attentionMask };
    if (ids.every((r) => r.length === width)) {
      const flat = new Int32Array(ids.length * width);
      ids.forEach((r, i) => flat.set(r, i * width));
      result.flat = flat;
      result.shape = [ids.length, width];
    }
    return result;
  }

  /**
   * Text of token ids, as transformers' convert_tokens_to_string: the bytes of every token,
   * UTF-8 with U+FFFD for invalid sequences, each "</w>" becoming a space, trimmed. The start and
   * end tokens are dropped unless `skipSpecialTokens` is false (then they appear as text).
   * Padding with a regular token (SD 2's "!") decodes as that token: cut rows with the attention mask.
   */
  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    const skip = opts.skipSpecialTokens ?? true;
    const bytes: number[] = [];
    const parts: string[] = [];
    const flush = (): void => {
      if (bytes.length > 0) parts.push(new TextDecoder("utf-8").decode(new Uint8Array(bytes)).replaceAll("</w>", " "));
      bytes.length = 0;
    };
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const tok = this.#decoder[id];
      if (tok === undefined) throw new Error(`decode: id ${id} is outside the vocabulary (size ${this.vocabSize})`);
      if (id === this.bosId || id === this.eosId) {
        if (skip) continue;
        flush();
        parts.push(` ${tok} `);
        continue;
      }
      for (const ch of tok) {
        const b = CHAR_TO_BYTE.get(ch);
        if (b === undefined) throw new Error(`decode: token ${JSON.stringify(tok)} (id ${id}) holds a character outside CLIP's byte alphabet`);
        bytes.push(b);
      }
    }
    flush();
    const text = parts.join("");
    return (skip ? text : text.replace(/ {2,}/g, " ")).trim();
  }

  /** BPE of one pre-tokenized piece, as ids (cached). */
  #bpeIds(piece: string): number[] {
    const cached = this.#cache.get(piece);
    if (cached !== undefined) return cached;
    const symbols: string[] = [];
    for (const b of new TextEncoder().encode(piece)) symbols.push(BYTE_TO_CHAR[b]!);
    symbols[symbols.length - 1] += "</w>";
    let word = symbols;
    while (word.length > 1) {
      let best = Infinity;
      let first = "";
      let second = "";
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.#ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < best) {
          best = r;
          first = word[i]!;
          second = word[i + 1]!;
        }
      }
      if (best === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(word[i]!);
          i += 1;
        }
      }
      word = merged;
    }
    const unk = this.eosId; // transformers maps unknown tokens to unk_token = <|endoftext|>
    const ids = word.map((tok) => this.#encoder.get(tok) ?? unk);
    if (this.#cache.size < 100_000) this.#cache.set(piece, ids);
    return ids;
  }
}

function parseMerges(text: string, path: string): [string, string][] {
  // As CLIP and transformers do: drop the first line (a version comment), keep at most 48,894.
  const lines = text.trim().split("\n").slice(1, 1 + CLIP_MERGE_COUNT);
  return lines.map((line, i) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2) throw new Error(`CLIP tokenizer: ${path} line ${i + 2} is not a merge "a b": ${JSON.stringify(line)}`);
    return [parts[0]!, parts[1]!];
  });
}

/** Writes `tokenizer` as a diffusers tokenizer folder (vocab.json, merges.txt, configs). */
export function saveTokenizerFolder(tokenizer: ClipTokenizer, dir: string): void {
  tokenizer.saveFolder(dir);
}
