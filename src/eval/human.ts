/**
 * The human-evaluation vote store: one SQLite file (by default `<eval folder>/human.sqlite`) that
 * the web app's blind A/B page writes into and `diffusion-dpo eval` reads for its report.
 *
 * Tables (schema version 1; human_eval_meta holds schema_version, the assignment seed, created_at):
 *   comparisons(id = the sample index in eval.json, prompt, seed, category, base_sha256,
 *               tuned_sha256, updated_at)             what each comparison showed
 *   assignments(comparison_id, rater, tuned_side 'left'|'right', shown_at,
 *               PRIMARY KEY(comparison_id, rater))   the layout, logged when first shown
 *   votes(comparison_id, rater, tuned_side, general, appeal, alignment ('left'|'right'|'tie'),
 *         created_at, PRIMARY KEY(comparison_id, rater))   one answer per rater and comparison
 *
 * The layout is a keyed coin: HMAC-SHA256(seed, comparison ‖ rater), so it differs per
 * comparison and per rater, reproduces from the seed, and is logged in `assignments` the first
 * time it is used. Votes keep the side the rater saw and the layout, so the mapping back to
 * tuned / base happens here, at tally time, and can be audited.
 *
 * WAL mode with a busy timeout like the preference store (src/data/store.ts): the web server
 * writes while `eval` reads. Every write is one BEGIN IMMEDIATE transaction.
 */
import { createHash, createHmac, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { HUMAN_QUESTIONS, humanResults, type HumanQuestion, type HumanResults, type HumanVote, type HumanWinner } from "./humanStats.js";

export const HUMAN_DB_NAME = "human.sqlite";
export const HUMAN_SCHEMA_VERSION = 1;

export type Side = "left" | "right";
export type ShownChoice = Side | "tie";

/** What one comparison shows: sample `id` of eval.json, its base and tuned image by content hash. */
export interface HumanComparison {
  id: number;
  prompt: string;
  seed: number;
  category: string | null;
  baseSha256: string;
  tunedSha256: string;
}

export interface HumanProgress {
  /** Comparisons this rater has answered. */
  done: number;
  /** Comparisons in the study. */
  total: number;
}

export type VoteOutcome = { ok: true; tunedSide: Side } | { ok: false; reason: "no-comparison" | "duplicate" };

/** Migrations: entry i brings the schema from version i to i + 1. Never edit a shipped one; append. */
const MIGRATIONS: string[] = [
  `
  CREATE TABLE comparisons (
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    category TEXT,
    base_sha256 TEXT NOT NULL,
    tuned_sha256 TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
  CREATE TABLE assignments (
    comparison_id INTEGER NOT NULL REFERENCES comparisons(id),
    rater TEXT NOT NULL,
    tuned_side TEXT NOT NULL CHECK (tuned_side IN ('left', 'right')),
    shown_at TEXT NOT NULL,
    PRIMARY KEY (comparison_id, rater)
  );
  CREATE TABLE votes (
    comparison_id INTEGER NOT NULL REFERENCES comparisons(id),
    rater TEXT NOT NULL,
    tuned_side TEXT NOT NULL CHECK (tuned_side IN ('left', 'right')),
    general TEXT NOT NULL CHECK (general IN ('left', 'right', 'tie')),
    appeal TEXT NOT NULL CHECK (appeal IN ('left', 'right', 'tie')),
    alignment TEXT NOT NULL CHECK (alignment IN ('left', 'right', 'tie')),
    created_at TEXT NOT NULL,
    PRIMARY KEY (comparison_id, rater)
  );
  CREATE INDEX votes_rater ON votes(rater);
  `,
];

const now = () => new Date().toISOString();

/** sha256 of a file's bytes, hex. */
export function fileSha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** The side of the tuned image the rater saw and their answer → tuned / base / tie. */
export function winnerOf(choice: ShownChoice, tunedSide: Side): HumanWinner {
  return choice === "tie" ? "tie" : choice === tunedSide ? "tuned" : "base";
}

interface VoteRow {
  comparison_id: number;
  rater: string;
  tuned_side: Side;
  general: ShownChoice;
  appeal: ShownChoice;
  alignment: ShownChoice;
  created_at: string;
  prompt: string;
  seed: number;
  category: string | null;
  base_sha256: string;
  tuned_sha256: string;
}

export class HumanEvalStore {
  readonly db: Database.Database;
  readonly #seed: string;

  /**
   * Opens (creating and migrating when needed) the vote store at `path`. `seed` fixes the layout
   * coin of a NEW file (tests, reproducible studies); an existing file keeps the seed it has.
   */
  constructor(readonly path: string, opts: { readonly?: boolean; seed?: string; busyTimeoutMs?: number } = {}) {
    const readonly = opts.readonly ?? false;
    if (path !== ":memory:" && !readonly) mkdirSync(dirname(path), { recursive: true });
    try {
      this.db = new Database(path, { readonly, fileMustExist: readonly });
    } catch (e) {
      throw new Error(`${path}: cannot open the human-eval vote store (${(e as Error).message})`);
    }
    try {
      this.db.pragma(`busy_timeout = ${opts.busyTimeoutMs ?? 10000}`);
      if (!readonly) {
        this.db.pragma("journal_mode = WAL");
        this.db.pragma("synchronous = NORMAL");
      }
      this.db.pragma("foreign_keys = ON");
      const tables = new Set((this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name));
      if (tables.size > 0 && !tables.has("human_eval_meta")) {
        throw new Error(`${path} is a SQLite file of another kind (tables ${[...tables].sort().join(", ")}); give the human-eval votes their own file (default <eval folder>/${HUMAN_DB_NAME})`);
      }
      if (!readonly) this.#migrate(opts.seed);
      const v = this.version();
      if (v !== HUMAN_SCHEMA_VERSION) throw new Error(`${path}: human-eval schema version ${v}, this code reads ${HUMAN_SCHEMA_VERSION}; open it once read-write to migrate`);
      this.#seed = this.#meta("seed")!;
    } catch (e) {
      this.db.close();
      throw e;
    }
  }

  #meta(key: string): string | null {
    const has = this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'human_eval_meta'").get();
    if (!has) return null;
    return (this.db.prepare("SELECT value FROM human_eval_meta WHERE key = ?").get(key) as { value: string } | undefined)?.value ?? null;
  }

  /** Schema version (0 for an empty file). */
  version(): number {
    return Number(this.#meta("schema_version") ?? 0);
  }

  #migrate(seed: string | undefined): void {
    // BEGIN IMMEDIATE: two processes creating the file at once must not both migrate
    const run = this.db.transaction(() => {
      this.db.exec("CREATE TABLE IF NOT EXISTS human_eval_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
      const put = this.db.prepare("INSERT INTO human_eval_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING");
      put.run("seed", seed ?? randomBytes(16).toString("hex"));
      put.run("created_at", now());
      put.run("schema_version", "0");
      let v = this.version();
      if (v > MIGRATIONS.length) throw new Error(`${this.path}: human-eval schema version ${v} is newer than this code (${MIGRATIONS.length}); upgrade diffusion-dpo`);
      for (; v < MIGRATIONS.length; v++) {
        this.db.exec(MIGRATIONS[v]!);
        this.db.prepare("UPDATE human_eval_meta SET value = ? WHERE key = 'schema_version'").run(String(v + 1));
      }
    });
    run.immediate();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  #mac(s: string): Buffer {
    return createHmac("sha256", this.#seed).update(s).digest();
  }

  /** The layout coin: which side `rater` sees the tuned image of `comparison` on. */
  coin(comparison: number, rater: string): Side {
    return (this.#mac(`side\u0000${comparison}\u0000${rater}`)[0]! & 1) === 1 ? "left" : "right";
  }

  /**
   * Makes the comparisons table match `list` (the eval folder's samples). A comparison that
   * already has votes must not change (prompt, seed or image hashes), nor disappear: the votes
   * would then describe other images.
   */
  syncComparisons(list: readonly HumanComparison[]): void {
    const get = this.db.prepare("SELECT id, prompt, seed, category, base_sha256, tuned_sha256 FROM comparisons WHERE id = ?");
    const voted = this.db.prepare("SELECT COUNT(*) AS n FROM votes WHERE comparison_id = ?");
    const ins = this.db.prepare("INSERT INTO comparisons (id, prompt, seed, category, base_sha256, tuned_sha256, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)");
    const upd = this.db.prepare("UPDATE comparisons SET prompt = ?, seed = ?, category = ?, base_sha256 = ?, tuned_sha256 = ?, updated_at = ? WHERE id = ?");
    const dropAssignments = this.db.prepare("DELETE FROM assignments WHERE comparison_id = ?");
    const changed = (id: number, why: string) =>
      new Error(`${this.path}: comparison ${id} ${why} since raters voted on it; the votes would describe other images. Keep the eval folder the votes were cast on, or move ${this.path} away to start a new study`);
    const tx = this.db.transaction(() => {
      const ids = new Set<number>();
      for (const c of list) {
        ids.add(c.id);
        const old = get.get(c.id) as { prompt: string; seed: number; category: string | null; base_sha256: string; tuned_sha256: string } | undefined;
        if (!old) {
          ins.run(c.id, c.prompt, c.seed, c.category, c.baseSha256, c.tunedSha256, now());
          continue;
        }
        if (old.prompt === c.prompt && old.seed === c.seed && old.category === c.category && old.base_sha256 === c.baseSha256 && old.tuned_sha256 === c.tunedSha256) continue;
        if ((voted.get(c.id) as { n: number }).n > 0) throw changed(c.id, "changed (prompt, seed or image bytes)");
        upd.run(c.prompt, c.seed, c.category, c.baseSha256, c.tunedSha256, now(), c.id);
        dropAssignments.run(c.id);
      }
      for (const { id } of this.db.prepare("SELECT id FROM comparisons").all() as { id: number }[]) {
        if (ids.has(id)) continue;
        if ((voted.get(id) as { n: number }).n > 0) throw changed(id, "is no longer in eval.json");
        dropAssignments.run(id);
        this.db.prepare("DELETE FROM comparisons WHERE id = ?").run(id);
      }
    });
    tx.immediate();
  }

  comparison(id: number): HumanComparison | null {
    const r = this.db.prepare("SELECT id, prompt, seed, category, base_sha256, tuned_sha256 FROM comparisons WHERE id = ?").get(id) as
      | { id: number; prompt: string; seed: number; category: string | null; base_sha256: string; tuned_sha256: string }
      | undefined;
    return r ? { id: r.id, prompt: r.prompt, seed: r.seed, category: r.category, baseSha256: r.base_sha256, tunedSha256: r.tuned_sha256 } : null;
  }

  /** The side the tuned image is on for `rater`: the logged assignment, logged now if new. */
  tunedSide(comparison: number, rater: string): Side {
    const get = this.db.prepare("SELECT tuned_side FROM assignments WHERE comparison_id = ? AND rater = ?");
    const row = get.get(comparison, rater) as { tuned_side: Side } | undefined;
    if (row) return row.tuned_side;
    this.db.prepare("INSERT INTO assignments (comparison_id, rater, tuned_side, shown_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING").run(comparison, rater, this.coin(comparison, rater), now());
    return (get.get(comparison, rater) as { tuned_side: Side }).tuned_side;
  }

  /** The comparison ids in the order `rater` sees them: a keyed shuffle, the same on every visit. */
  orderFor(rater: string): number[] {
    const ids = (this.db.prepare("SELECT id FROM comparisons").all() as { id: number }[]).map((r) => r.id);
    const key = new Map(ids.map((id) => [id, this.#mac(`order\u0000${rater}\u0000${id}`).toString("hex")]));
    return ids.sort((a, b) => (key.get(a)! < key.get(b)! ? -1 : key.get(a)! > key.get(b)! ? 1 : a - b));
  }

  progress(rater: string): HumanProgress {
    const done = (this.db.prepare("SELECT COUNT(*) AS n FROM votes v JOIN comparisons c ON c.id = v.comparison_id WHERE v.rater = ?").get(rater) as { n: number }).n;
    const total = (this.db.prepare("SELECT COUNT(*) AS n FROM comparisons").get() as { n: number }).n;
    return { done, total };
  }

  /** The next comparison `rater` has not answered (in their order), or null when done. */
  next(rater: string): { comparison: HumanComparison | null; progress: HumanProgress } {
    const voted = new Set((this.db.prepare("SELECT comparison_id AS id FROM votes WHERE rater = ?").all(rater) as { id: number }[]).map((r) => r.id));
    const id = this.orderFor(rater).find((i) => !voted.has(i));
    return { comparison: id === undefined ? null : this.comparison(id), progress: this.progress(rater) };
  }

  /** Stores one rater's answers on one comparison; a second vote by the same rater is refused. */
  vote(rater: string, comparison: number, answers: Record<HumanQuestion, ShownChoice>): VoteOutcome {
    const tx = this.db.transaction((): VoteOutcome => {
      if (!this.comparison(comparison)) return { ok: false, reason: "no-comparison" };
      if (this.db.prepare("SELECT 1 FROM votes WHERE comparison_id = ? AND rater = ?").get(comparison, rater)) return { ok: false, reason: "duplicate" };
      const tunedSide = this.tunedSide(comparison, rater);
      this.db
        .prepare("INSERT INTO votes (comparison_id, rater, tuned_side, general, appeal, alignment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .run(comparison, rater, tunedSide, answers.general, answers.appeal, answers.alignment, now());
      return { ok: true, tunedSide };
    });
    return tx.immediate();
  }

  /**
   * Every vote mapped to tuned / base / tie. With `current` (comparison id → the hashes of the
   * images now in the eval folder) votes on comparisons whose images differ are left out and counted.
   */
  votes(current?: ReadonlyMap<number, { baseSha256: string; tunedSha256: string }>): { votes: HumanVote[]; stale: number } {
    const rows = this.db
      .prepare(`SELECT v.comparison_id, v.rater, v.tuned_side, v.general, v.appeal, v.alignment, v.created_at,
                       c.prompt, c.seed, c.category, c.base_sha256, c.tuned_sha256
                FROM votes v JOIN comparisons c ON c.id = v.comparison_id ORDER BY v.comparison_id, v.rater`)
      .all() as VoteRow[];
    let stale = 0;
    const votes: HumanVote[] = [];
    for (const r of rows) {
      if (current) {
        const cur = current.get(r.comparison_id);
        if (!cur || cur.baseSha256 !== r.base_sha256 || cur.tunedSha256 !== r.tuned_sha256) {
          stale++;
          continue;
        }
      }
      const answers = {} as Record<HumanQuestion, HumanWinner>;
      for (const q of HUMAN_QUESTIONS) answers[q] = winnerOf(r[q], r.tuned_side);
      votes.push({ comparison: r.comparison_id, prompt: r.prompt, seed: r.seed, category: r.category, rater: r.rater, answers });
    }
    return { votes, stale };
  }
}

/**
 * The human results stored in `dbPath`, or null when the file does not exist or holds no votes.
 * `current` (see HumanEvalStore.votes) keeps only votes on the images now in the eval folder.
 */
export function readHumanResults(
  dbPath: string,
  opts: { current?: ReadonlyMap<number, { baseSha256: string; tunedSha256: string }>; bootstrap?: number } = {},
): (HumanResults & { db: string; stale: number }) | null {
  if (!existsSync(dbPath)) return null;
  const store = new HumanEvalStore(dbPath, { readonly: true });
  try {
    const { votes, stale } = store.votes(opts.current);
    if (votes.length === 0 && stale === 0) return null;
    return { ...humanResults(votes, { bootstrap: opts.bootstrap }), db: dbPath, stale };
  } finally {
    store.close();
  }
}
