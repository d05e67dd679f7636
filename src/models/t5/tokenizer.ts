// transformers' slow T5Tokenizer in its legacy mode (what the SD3 and FLUX.1 tokenizer_config.json
// select with `legacy: true`), from a tokenizer folder: spiece.model + tokenizer_config.json
// (+ added_tokens.json).
//
//   text → split at added tokens (<pad>, </s>, <unk>, <extra_id_N>; the extra ids strip the spaces
//   around them) → SentencePiece encode of each other segment → ids (pieces by their model index,
//   extra ids after them, <extra_id_0> last) → truncate to maxLength − 1 → append </s> → pad with <pad>.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readJsonObject } from "../../util/config-json.js";
import { SentencePieceUnigram } from "./sentencepiece.js";

export interface T5EncodedBatch {
  /** [rows][maxLength] ids, </s> included, padded with the pad id. */
  ids: number[][];
  /** 1 for tokens (</s> included), 0 for padding. */
  attentionMask: number[][];
  /** Each row's tokens before padding (pieces and special tokens as strings). */
  tokens: string[][];
  /** Each row's length with </s> before truncation. */
  untruncatedLengths: number[];
}

export class T5Tokenizer {
  readonly padId: number;
  readonly eosId: number;
  readonly unkId: number;
  /** Added (special) tokens by text: <pad>, </s>, <unk> and the extra ids. */
  private readonly added = new Map<string, { id: number; strip: boolean }>();
  private readonly addedPattern: RegExp | null;

  constructor(readonly model: SentencePieceUnigram, opts: { extraIds?: number; modelMaxLength?: number } = {}) {
    const extra = opts.extraIds ?? 100;
    this.modelMaxLength = opts.modelMaxLength ?? 512;
    const id = (piece: string, fallback: number) => {
      const i = model.pieceToId(piece);
      return i === model.unkId && piece !== "<unk>" ? fallback : i;
    };
    this.padId = id("<pad>", 0);
    this.eosId = id("</s>", 1);
    this.unkId = model.unkId;
    this.added.set("<pad>", { id: this.padId, strip: false });
    this.added.set("</s>", { id: this.eosId, strip: false });
    this.added.set("<unk>", { id: this.unkId, strip: false });
    for (let k = 0; k < extra; k++) this.added.set(`<extra_id_${k}>`, { id: model.size + extra - 1 - k, strip: true });
    const escaped = [...this.added.keys()].sort((a, b) => b.length - a.length).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    this.addedPattern = escaped.length > 0 ? new RegExp(`(${escaped.join("|")})`) : null;
    this.vocabSize = model.size + extra;
  }
  readonly modelMaxLength: number;
  /** len(tokenizer): the pieces plus the extra ids (the T5 embedding must have at least this many rows). */
  readonly vocabSize: number;

  /** Loads a transformers T5Tokenizer folder (spiece.model, tokenizer_config.json). */
  static fromFolder(dir: string): T5Tokenizer {
    const spiece = join(dir, "spiece.model");
    if (!existsSync(spiece)) {
      throw new Error(`T5 tokenizer: ${spiece} is missing (only slow T5Tokenizer folders with spiece.model are read; a tokenizer.json alone is not supported)`);
    }
    const configPath = join(dir, "tokenizer_config.json");
    const config = existsSync(configPath) ? readJsonObject(configPath, "T5 tokenizer") : {};
    if (config.legacy === false) {
      throw new Error(`${configPath}: legacy false is not supported (only the legacy T5Tokenizer behaviour SD3 and FLUX.1 use)`);
    }
    const extraIds = typeof config.extra_ids === "number" ? config.extra_ids : 100;
    const maxLen = typeof config.model_max_length === "number" && config.model_max_length < 1e9 ? config.model_max_length : 512;
    return new T5Tokenizer(SentencePieceUnigram.fromFile(spiece), { extraIds, modelMaxLength: maxLen });
  }

  /** The tokens of one text without </s> (tokenizer.tokenize). */
  tokenize(text: string): { token: string; id: number }[] {
    const parts = this.addedPattern ? text.split(this.addedPattern) : [text];
    const out: { token: string; id: number }[] = [];
    for (let i = 0; i < parts.length; i++) {
      let part = parts[i]!;
      const special = i % 2 === 1 ? this.added.get(part) : undefined;
      if (special) { out.push({ token: part, id: special.id }); continue; }
      // an extra id's lstrip / rstrip eats the whitespace next to it
      if (i > 0 && this.added.get(parts[i - 1]!)?.strip) part = part.replace(/^\s+/u, "");
      if (i + 1 < parts.length && this.added.get(parts[i + 1]!)?.strip) part = part.replace(/\s+$/u, "");
      if (part.length === 0) continue;
      for (const p of this.model.encode(part)) out.push({ token: p.piece, id: p.id });
    }
    return out;
  }

  /** tokenizer(texts, padding="max_length", max_length, truncation=True). */
  encode(texts: string[], maxLength = this.modelMaxLength): T5EncodedBatch {
    if (!Number.isInteger(maxLength) || maxLength < 1) throw new Error(`T5Tokenizer.encode: maxLength must be a positive integer, got ${maxLength}`);
    const batch: T5EncodedBatch = { ids: [], attentionMask: [], tokens: [], untruncatedLengths: [] };
    for (const text of texts) {
      let toks = this.tokenize(text);
      const endsWithEos = toks.length > 0 && toks[toks.length - 1]!.id === this.eosId;
      if (!endsWithEos) toks = [...toks, { token: "</s>", id: this.eosId }];
      batch.untruncatedLengths.push(toks.length);
      if (toks.length > maxLength) toks = [...toks.slice(0, maxLength - 1), { token: "</s>", id: this.eosId }];
      const ids = toks.map((t) => t.id);
      batch.tokens.push(toks.map((t) => t.token));
      batch.attentionMask.push([...ids.map(() => 1), ...new Array<number>(maxLength - ids.length).fill(0)]);
      batch.ids.push([...ids, ...new Array<number>(maxLength - ids.length).fill(this.padId)]);
    }
    return batch;
  }
}
