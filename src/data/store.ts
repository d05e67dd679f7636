/**
 * The SQLite preference store: one file that the labelling web app writes votes into, the
 * AI-feedback labeller writes reward scores into, and the trainer reads pairs from.
 *
 * Tables (schema version 1):
 *   prompts(id, text UNIQUE, created_at)
 *   images(id, prompt_id → prompts, data BLOB | path TEXT, format, width, height, model, seed,
 *          meta JSON, created_at)
 *   pairs(id, prompt_id → prompts, image_a → images, image_b → images, created_at,
 *         UNIQUE(image_a, image_b))
 *   votes(pair_id → pairs, rater, choice 'a'|'b'|'tie'|'skip', created_at, PRIMARY KEY(pair_id, rater))
 *   ai_labels(pair_id → pairs, reward, score_a, score_b, created_at, margin, PRIMARY KEY(pair_id, reward))
 *   schema_version(version)
 * Version 2 added ai_labels.margin: the tie margin the labeller chose (|score_a − score_b| ≤ margin
 * is a tie), used by resolution unless the reader passes its own margin.
 *
 * The connection runs in WAL mode with a busy timeout, so several processes (web server,
 * labeller, trainer) can use the file at once; every write is one transaction, and a vote is
 * an upsert on (pair_id, rater), so repeating a vote never stores it twice.
 *
 * Resolving a pair into a training pair: human votes by plurality ('skip' ignored; a tie or an
 * equal count of a and b votes is a tie), or an AI label when |score_a − score_b| > margin.
 * Ties and unlabelled pairs are not trained on.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { exportStoreJsonl, exportStoreParquet, type ExportParquetOptions } from "./store-export.js";
import { damagedStore, StoreSource } from "./store-source.js";
import type {
  AiLabel, ImageInput, Resolution, ResolveOptions, StoreReader, StoreSourceOptions, StoredImage, StoredPair, Vote, VoteChoice,
} from "./store-types.js";

// the store's records and readers live in store-types.ts, store-source.ts and store-export.ts
export * from "./store-types.js";
export { damagedStore, StoreSource } from "./store-source.js";
export { exportStoreJsonl, exportStoreParquet, type ExportParquetOptions } from "./store-export.js";

export const STORE_SCHEMA_VERSION = 2;

/** Migrations: entry i brings the schema from version i to i + 1. Never edit a shipped one; append. */
const MIGRATIONS: string[] = [
  `
  CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
  );
  CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    data BLOB,
    path TEXT,
    format TEXT,
    width INTEGER,
    height INTEGER,
    model TEXT,
    seed INTEGER,
    meta TEXT,
    created_at TEXT NOT NULL,
    CHECK (data IS NOT NULL OR path IS NOT NULL)
  );
  CREATE INDEX images_prompt ON images(prompt_id);
  CREATE TABLE pairs (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    image_a INTEGER NOT NULL REFERENCES images(id),
    image_b INTEGER NOT NULL REFERENCES images(id),
    created_at TEXT NOT NULL,
    UNIQUE (image_a, image_b),
    CHECK (image_a <> image_b)
  );
  CREATE TABLE votes (
    pair_id INTEGER NOT NULL REFERENCES pairs(id) ON DELETE CASCADE,
    rater TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'skip')),
    created_at TEXT NOT NULL,
    PRIMARY KEY (pair_id, rater)
  );
  CREATE INDEX votes_rater ON votes(rater);
  CREATE TABLE ai_labels (
    pair_id INTEGER NOT NULL REFERENCES pairs(id) ON DELETE CASCADE,
    reward TEXT NOT NULL,
    score_a REAL NOT NULL,
    score_b REAL NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (pair_id, reward)
  );
  `,
  // 1 → 2: the labeller's tie margin travels with its scores
  `
  ALTER TABLE ai_labels ADD COLUMN margin REAL NOT NULL DEFAULT 0;
  `,
];

interface PairRow {
  id: number;
  prompt_id: number;
  text: string;
  image_a: number;
  image_b: number;
  created_at: string;
}

interface ImageRow {
  id: number;
  prompt_id: number;
  data: Buffer | null;
  path: string | null;
  format: string | null;
  width: number | null;
  height: number | null;
  model: string | null;
  seed: number | null;
  meta: string | null;
  created_at: string;
}

function now(): string {
  return new Date().toISOString();
}

function toImage(r: ImageRow): StoredImage {
  return {
    id: r.id,
    promptId: r.prompt_id,
    data: r.data ? new Uint8Array(r.data.buffer, r.data.byteOffset, r.data.byteLength) : null,
    path: r.path,
    format: r.format,
    width: r.width,
    height: r.height,
    model: r.model,
    seed: r.seed,
    meta: r.meta ? (JSON.parse(r.meta) as Record<string, unknown>) : null,
    createdAt: r.created_at,
  };
}

export class PreferenceStore implements StoreReader {
  readonly db: Database.Database;

  /** Opens (creating and migrating when needed) the store at `path` (":memory:" works for tests). */
  constructor(readonly path: string, opts: { readonly?: boolean; busyTimeoutMs?: number } = {}) {
    if (path !== ":memory:" && !opts.readonly) mkdirSync(dirname(path), { recursive: true });
    try {
      this.db = new Database(path, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
    } catch (e) {
      throw new Error(`${path}: cannot open the preference store (${(e as Error).message})`);
    }
    try {
      this.db.pragma(`busy_timeout = ${opts.busyTimeoutMs ?? 10000}`);
      if (!opts.readonly) {
        this.db.pragma("journal_mode = WAL");
        this.db.pragma("synchronous = NORMAL");
      }
      this.db.pragma("foreign_keys = ON");
      if (!opts.readonly) this.migrate();
      else if (this.version() !== STORE_SCHEMA_VERSION) {
        throw new Error(`${path}: store schema version ${this.version()}, this code reads ${STORE_SCHEMA_VERSION}; open it once read-write to migrate`);
      }
    } catch (e) {
      this.db.close();
      throw damagedStore(path, e);
    }
  }

  /** Current schema version (0 for an empty file). */
  version(): number {
    const has = this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").get();
    if (!has) return 0;
    const row = this.db.prepare("SELECT version FROM schema_version").get() as { version: number } | undefined;
    return row?.version ?? 0;
  }

  private migrate(): void {
    // BEGIN IMMEDIATE: two processes opening a new file at once must not both migrate
    const run = this.db.transaction(() => {
      this.db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
      let v = this.version();
      if (v > MIGRATIONS.length) {
        throw new Error(`${this.path}: store schema version ${v} is newer than this code (${MIGRATIONS.length}); upgrade diffusion-dpo`);
      }
      if (v === 0 && !this.db.prepare("SELECT version FROM schema_version").get()) this.db.prepare("INSERT INTO schema_version (version) VALUES (0)").run();
      for (; v < MIGRATIONS.length; v++) {
        this.db.exec(MIGRATIONS[v]!);
        this.db.prepare("UPDATE schema_version SET version = ?").run(v + 1);
      }
    });
    run.immediate();
  }

  close(): void {
    this.db.close();
  }

  /** Id of `text` in prompts, inserting it when new. */
  addPrompt(text: string): number {
    if (typeof text !== "string" || text.trim() === "") throw new Error("addPrompt: the prompt must be a non-empty string");
    this.db.prepare("INSERT INTO prompts (text, created_at) VALUES (?, ?) ON CONFLICT(text) DO NOTHING").run(text, now());
    return (this.db.prepare("SELECT id FROM prompts WHERE text = ?").get(text) as { id: number }).id;
  }

  addImage(img: ImageInput): number {
    if (!img.data && !img.path) throw new Error("addImage: give the image bytes (data) or a file path (path)");
    const tx = this.db.transaction(() => {
      const promptId = this.addPrompt(img.prompt);
      const r = this.db
        .prepare(
          `INSERT INTO images (prompt_id, data, path, format, width, height, model, seed, meta, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          promptId,
          img.data ? Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength) : null,
          img.path ?? null,
          img.format ?? null,
          img.width ?? null,
          img.height ?? null,
          img.model ?? null,
          img.seed ?? null,
          img.meta ? JSON.stringify(img.meta) : null,
          now(),
        );
      return Number(r.lastInsertRowid);
    });
    return tx.immediate();
  }

  image(id: number): StoredImage | null {
    const r = this.db.prepare("SELECT * FROM images WHERE id = ?").get(id) as ImageRow | undefined;
    return r ? toImage(r) : null;
  }

  /** Encoded bytes of an image (from the file for path images). */
  imageBytes(id: number): Uint8Array {
    const img = this.image(id);
    if (!img) throw new Error(`${this.path}: no image ${id}`);
    if (img.data) return img.data;
    return readFileSync(img.path!);
  }

  /** Pairs two images of the same prompt; returns the existing id when the pair is already there. */
  addPair(imageA: number, imageB: number): number {
    const tx = this.db.transaction(() => {
      const a = this.db.prepare("SELECT prompt_id FROM images WHERE id = ?").get(imageA) as { prompt_id: number } | undefined;
      const b = this.db.prepare("SELECT prompt_id FROM images WHERE id = ?").get(imageB) as { prompt_id: number } | undefined;
      if (!a || !b) throw new Error(`addPair: no image ${!a ? imageA : imageB}`);
      if (a.prompt_id !== b.prompt_id) throw new Error(`addPair: images ${imageA} and ${imageB} belong to different prompts`);
      if (imageA === imageB) throw new Error(`addPair: an image cannot be paired with itself (${imageA})`);
      const existing = this.db.prepare("SELECT id FROM pairs WHERE (image_a = ? AND image_b = ?) OR (image_a = ? AND image_b = ?)").get(imageA, imageB, imageB, imageA) as { id: number } | undefined;
      if (existing) return existing.id;
      const r = this.db.prepare("INSERT INTO pairs (prompt_id, image_a, image_b, created_at) VALUES (?, ?, ?, ?)").run(a.prompt_id, imageA, imageB, now());
      return Number(r.lastInsertRowid);
    });
    return tx.immediate();
  }

  pair(id: number): StoredPair | null {
    const r = this.db.prepare("SELECT p.id, p.prompt_id, t.text, p.image_a, p.image_b, p.created_at FROM pairs p JOIN prompts t ON t.id = p.prompt_id WHERE p.id = ?").get(id) as PairRow | undefined;
    return r ? { id: r.id, promptId: r.prompt_id, prompt: r.text, imageA: r.image_a, imageB: r.image_b, createdAt: r.created_at } : null;
  }

  /**
   * Records `rater`'s choice on a pair (one transaction). Voting again replaces the earlier
   * choice: one row per (pair, rater). Returns whether a new vote row was created.
   */
  vote(pairId: number, rater: string, choice: VoteChoice): { created: boolean } {
    if (!["a", "b", "tie", "skip"].includes(choice)) throw new Error(`vote: choice must be 'a', 'b', 'tie' or 'skip', got '${choice}'`);
    if (typeof rater !== "string" || rater === "") throw new Error("vote: rater must be a non-empty string");
    const tx = this.db.transaction(() => {
      if (!this.db.prepare("SELECT 1 FROM pairs WHERE id = ?").get(pairId)) throw new Error(`vote: no pair ${pairId}`);
      const before = this.db.prepare("SELECT 1 FROM votes WHERE pair_id = ? AND rater = ?").get(pairId, rater);
      this.db
        .prepare(
          `INSERT INTO votes (pair_id, rater, choice, created_at) VALUES (?, ?, ?, ?)
           ON CONFLICT(pair_id, rater) DO UPDATE SET choice = excluded.choice, created_at = excluded.created_at`,
        )
        .run(pairId, rater, choice, now());
      return { created: !before };
    });
    return tx.immediate();
  }

  /** Removes `rater`'s vote on a pair; returns whether there was one. */
  undoVote(pairId: number, rater: string): boolean {
    return this.db.prepare("DELETE FROM votes WHERE pair_id = ? AND rater = ?").run(pairId, rater).changes > 0;
  }

  votesFor(pairId: number): Vote[] {
    return (this.db.prepare("SELECT pair_id, rater, choice, created_at FROM votes WHERE pair_id = ? ORDER BY rater").all(pairId) as { pair_id: number; rater: string; choice: VoteChoice; created_at: string }[])
      .map((r) => ({ pairId: r.pair_id, rater: r.rater, choice: r.choice, createdAt: r.created_at }));
  }

  /**
   * The next pair `rater` has not voted on (skips included), least-voted first so votes spread
   * over the data; null when the rater has seen everything.
   */
  nextPairFor(rater: string): StoredPair | null {
    const r = this.db
      .prepare(
        `SELECT p.id, p.prompt_id, t.text, p.image_a, p.image_b, p.created_at
         FROM pairs p JOIN prompts t ON t.id = p.prompt_id
         WHERE NOT EXISTS (SELECT 1 FROM votes v WHERE v.pair_id = p.id AND v.rater = ?)
         ORDER BY (SELECT COUNT(*) FROM votes v2 WHERE v2.pair_id = p.id AND v2.choice <> 'skip'), p.id
         LIMIT 1`,
      )
      .get(rater) as PairRow | undefined;
    return r ? { id: r.id, promptId: r.prompt_id, prompt: r.text, imageA: r.image_a, imageB: r.image_b, createdAt: r.created_at } : null;
  }

  /**
   * Stores (or replaces) reward `reward`'s scores for a pair; `margin` (default 0) is the tie
   * margin resolution applies to this label unless a reader overrides it.
   */
  setAiLabel(pairId: number, reward: string, scoreA: number, scoreB: number, margin = 0): void {
    if (!Number.isFinite(scoreA) || !Number.isFinite(scoreB)) throw new Error(`setAiLabel: scores must be finite numbers, got ${scoreA}, ${scoreB} for pair ${pairId}`);
    if (!(margin >= 0)) throw new Error(`setAiLabel: margin must be a number ≥ 0, got ${margin} for pair ${pairId}`);
    this.db
      .prepare(
        `INSERT INTO ai_labels (pair_id, reward, score_a, score_b, created_at, margin) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(pair_id, reward) DO UPDATE SET score_a = excluded.score_a, score_b = excluded.score_b, created_at = excluded.created_at, margin = excluded.margin`,
      )
      .run(pairId, reward, scoreA, scoreB, now(), margin);
  }

  /**
   * Writes many AI labels in one transaction (the labeller's batches): each row replaces the
   * pair's earlier label from the same reward.
   */
  setAiLabels(rows: readonly { pairId: number; reward: string; scoreA: number; scoreB: number; margin?: number }[]): void {
    const tx = this.db.transaction(() => {
      for (const r of rows) this.setAiLabel(r.pairId, r.reward, r.scoreA, r.scoreB, r.margin ?? 0);
    });
    tx.immediate();
  }

  /** The images stored for a prompt (oldest first); empty when the prompt is unknown. */
  imagesOfPrompt(prompt: string): StoredImage[] {
    const rows = this.db.prepare("SELECT i.* FROM images i JOIN prompts p ON p.id = i.prompt_id WHERE p.text = ? ORDER BY i.id").all(prompt) as ImageRow[];
    return rows.map(toImage);
  }

  labelsFor(pairId: number): AiLabel[] {
    return (this.db.prepare("SELECT * FROM ai_labels WHERE pair_id = ? ORDER BY reward").all(pairId) as { pair_id: number; reward: string; score_a: number; score_b: number; margin: number; created_at: string }[])
      .map((r) => ({ pairId: r.pair_id, reward: r.reward, scoreA: r.score_a, scoreB: r.score_b, margin: r.margin, createdAt: r.created_at }));
  }

  counts(): { prompts: number; images: number; pairs: number; votes: number; aiLabels: number } {
    const c = (t: string) => (this.db.prepare(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n;
    return { prompts: c("prompts"), images: c("images"), pairs: c("pairs"), votes: c("votes"), aiLabels: c("ai_labels") };
  }

  pairIds(): number[] {
    return (this.db.prepare("SELECT id FROM pairs ORDER BY id").all() as { id: number }[]).map((r) => r.id);
  }

  /** Which image of the pair won, by human votes and/or AI labels (see the file comment). */
  resolve(pairId: number, opts: ResolveOptions = {}): Resolution {
    const mode = opts.labels ?? "human-then-ai";
    if (mode !== "ai") {
      const votes = this.votesFor(pairId).filter((v) => v.choice !== "skip");
      if (votes.length >= (opts.minVotes ?? 1) && votes.length > 0) {
        const n = { a: 0, b: 0, tie: 0 };
        for (const v of votes) n[v.choice as "a" | "b" | "tie"]++;
        const winner = n.a > n.b && n.a > n.tie ? "a" : n.b > n.a && n.b > n.tie ? "b" : "tie";
        return { winner, by: "human", votes: votes.length };
      }
      if (mode === "human") return { winner: null };
    }
    let labels = this.labelsFor(pairId);
    if (opts.reward !== undefined) labels = labels.filter((l) => l.reward === opts.reward);
    if (labels.length === 0) return { winner: null };
    if (labels.length > 1) {
      throw new Error(`${this.path}: pair ${pairId} has AI labels from ${labels.map((l) => l.reward).join(", ")}; choose one with the reward option`);
    }
    const l = labels[0]!;
    const margin = opts.margin ?? l.margin;
    const d = l.scoreA - l.scoreB;
    return { winner: Math.abs(d) <= margin ? "tie" : d > 0 ? "a" : "b", by: "ai", votes: 0 };
  }

  /** The store as a reader for training (see `StoreSource`). */
  source(opts: StoreSourceOptions = {}): StoreSource {
    return new StoreSource(this, opts);
  }

  /**
   * Writes resolved pairs as JSONL (chosen/rejected form); images stored as bytes are written
   * to `imagesDir` (default: "<jsonl>.images/") as files named by image id. See store-export.ts.
   */
  exportJsonl(file: string, opts: StoreSourceOptions & { imagesDir?: string } = {}): Promise<{ pairs: number }> {
    return exportStoreJsonl(this, file, opts);
  }

  /** Writes labelled pairs as a Pick-a-Pic-schema parquet file; see store-export.ts. */
  exportParquet(file: string, opts: ExportParquetOptions = {}): Promise<{ rows: number }> {
    return exportStoreParquet(this, file, opts);
  }
}
