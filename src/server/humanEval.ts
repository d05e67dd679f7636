// The blind A/B human evaluation of an eval folder: each comparison (sample = prompt × seed: the
// base and the tuned image from the same seed) is shown once per rater, tuned on a side decided by
// the store's keyed coin; the rater answers three questions with left / right / tie.
//
// What reaches the browser before (and after) a vote says nothing about which side is tuned: the
// images are addressed as /api/human/image/<comparison>/<left|right>?rater=R and the server
// resolves the side; answers come back as left / right / tie and are mapped to tuned / base only in
// the tally (src/eval/human.ts). The Compare page and the report name base and tuned, so a blind
// study runs `serve --eval DIR --blind`, which turns them off.
import { readFileSync } from "node:fs";
import type { Hono } from "hono";
import { z } from "zod";
import { fileSha256, HumanEvalStore, type HumanComparison, type Side } from "../eval/human.js";
import { HUMAN_QUESTION_TEXT, HUMAN_QUESTIONS, humanResults, rewardAgreement, type HumanResults } from "../eval/humanStats.js";
import type { EvalFolder } from "./evalFolder.js";
import { imageType } from "./labelling.js";
import { parseBody, parseId, Rater } from "./request.js";
import { jsonError } from "./security.js";

const Answer = z.enum(["left", "right", "tie"], { error: "answer left, right or tie" });

export const HumanVoteBody = z.strictObject({
  rater: Rater,
  comparison: z.number().int().nonnegative(),
  general: Answer,
  appeal: Answer,
  alignment: Answer,
});

export interface ShownComparison {
  id: number;
  prompt: string;
  left: { url: string };
  right: { url: string };
}

export function humanImageUrl(comparison: number, slot: Side, rater: string): string {
  return `/api/human/image/${comparison}/${slot}?rater=${encodeURIComponent(rater)}`;
}

/** Per-reward AI verdicts beside the human ones: the eval's win rate and its agreement with the human majority. */
export interface RewardBeside {
  reward: string;
  rate: number | null;
  interval: [number, number] | null;
  agreement: Record<string, { agree: number; decisive: number; rate: number | null }>;
}

export class HumanEvalSession {
  #store: HumanEvalStore | null = null;
  #synced: unknown = null;
  #current: HumanComparison[] = [];

  constructor(readonly evalFolder: EvalFolder, readonly dbPath: string, readonly opts: { seed?: string; blind?: boolean } = {}) {}

  /** The comparisons the eval folder defines now (one per sample), with their images' hashes. */
  comparisons(): HumanComparison[] {
    return this.evalFolder.load().samples.map((s, id) => {
      const base = this.evalFolder.imagePath(id, "base");
      const tuned = this.evalFolder.imagePath(id, "tuned");
      if (!base || !tuned) throw new Error(`${this.evalFolder.file}: sample ${id} has no readable ${base ? "tuned" : "base"} image inside ${this.evalFolder.dir}`);
      return { id, prompt: s.prompt, seed: s.seed, category: s.category ?? null, baseSha256: fileSha256(base), tunedSha256: fileSha256(tuned) };
    });
  }

  /** The vote store, opened on first use and kept in step with eval.json. */
  store(): HumanEvalStore {
    this.#store ??= new HumanEvalStore(this.dbPath, { seed: this.opts.seed });
    const data = this.evalFolder.load();
    if (this.#synced !== data) {
      const list = this.comparisons();
      this.#store.syncComparisons(list);
      this.#current = list;
      this.#synced = data;
    }
    return this.#store;
  }

  shown(c: HumanComparison, rater: string): ShownComparison {
    // log the layout now, before the images are fetched
    this.store().tunedSide(c.id, rater);
    return { id: c.id, prompt: c.prompt, left: { url: humanImageUrl(c.id, "left", rater) }, right: { url: humanImageUrl(c.id, "right", rater) } };
  }

  next(rater: string): { comparison: ShownComparison | null; progress: { done: number; total: number } } {
    const n = this.store().next(rater);
    return { comparison: n.comparison ? this.shown(n.comparison, rater) : null, progress: n.progress };
  }

  /** Path of the image `rater` sees on `slot` of `comparison`, or null when there is no such comparison. */
  imagePath(comparison: number, slot: Side, rater: string): string | null {
    const store = this.store();
    if (!store.comparison(comparison)) return null;
    const tunedSide = store.tunedSide(comparison, rater);
    return this.evalFolder.imagePath(comparison, slot === tunedSide ? "tuned" : "base");
  }

  /** The tally on the images now in the folder, with the eval's reward verdicts beside it. */
  results(opts: { bootstrap?: number } = {}): HumanResults & { stale: number; db: string; rewards: RewardBeside[] } {
    const store = this.store();
    const current = new Map(this.#current.map((c) => [c.id, c]));
    const { votes, stale } = store.votes(current);
    const results = humanResults(votes, { bootstrap: opts.bootstrap });
    const view = this.evalFolder.view();
    const winRate = (view.summary.winRate ?? {}) as Record<string, { rate?: unknown; interval?: unknown }>;
    const config = (view.summary.config ?? {}) as { tieMargin?: unknown };
    const tieMargin = typeof config.tieMargin === "number" ? config.tieMargin : 0;
    const rewards = view.rewards.map((reward): RewardBeside => {
      const w = winRate[reward];
      const delta = (id: number) => {
        const s = view.samples[id]?.scores[reward];
        return s && s.base !== null && s.tuned !== null ? s.tuned - s.base : null;
      };
      const agreement: RewardBeside["agreement"] = {};
      for (const q of HUMAN_QUESTIONS) {
        const a = rewardAgreement(results, q, delta, tieMargin);
        agreement[q] = { ...a, rate: Number.isFinite(a.rate) ? a.rate : null };
      }
      return {
        reward,
        rate: typeof w?.rate === "number" ? w.rate : null,
        interval: Array.isArray(w?.interval) && w.interval.length === 2 ? (w.interval as [number, number]) : null,
        agreement,
      };
    });
    return { ...results, stale, db: this.dbPath, rewards };
  }

  close(): void {
    this.#store?.close();
    this.#store = null;
  }
}

/** JSON without NaN (JSON has none): null where a number is undefined. */
function finite<T>(v: T): unknown {
  return JSON.parse(JSON.stringify(v, (_k, x: unknown) => (typeof x === "number" && !Number.isFinite(x) ? null : x)));
}

/** The A/B routes: next comparison, vote, images by slot, results. */
export function mountHumanEval(app: Hono, session: HumanEvalSession | null): void {
  const none = "no evaluation folder: start serve with --eval DIR for the human evaluation";
  const questions = HUMAN_QUESTIONS.map((key) => ({ key, text: HUMAN_QUESTION_TEXT[key] }));

  app.get("/api/human/next", (c) => {
    if (!session) return jsonError(c, 404, none);
    const r = Rater.safeParse(c.req.query("rater") ?? "");
    if (!r.success) return jsonError(c, 400, `rater: ${r.error.issues[0]!.message} (give ?rater=NAME)`);
    return c.json({ ...session.next(r.data), questions, blind: session.opts.blind ?? false });
  });

  app.post("/api/human/vote", async (c) => {
    if (!session) return jsonError(c, 404, none);
    const b = await parseBody(c, HumanVoteBody);
    if (!b.ok) return b.res;
    const { rater, comparison, ...answers } = b.value;
    const r = session.store().vote(rater, comparison, answers);
    if (!r.ok && r.reason === "no-comparison") return jsonError(c, 404, `comparison: no comparison ${comparison} in ${session.evalFolder.file}`);
    if (!r.ok) return jsonError(c, 409, `comparison: rater "${rater}" already answered comparison ${comparison} (each comparison is shown once per rater)`);
    // the answer names no side: the layout stays on the server
    return c.json({ stored: { comparison, rater, ...answers }, ...session.next(rater) });
  });

  app.get("/api/human/image/:comparison/:slot", (c) => {
    if (!session) return jsonError(c, 404, none);
    const id = parseId(c.req.param("comparison"));
    const slot = c.req.param("slot");
    const r = Rater.safeParse(c.req.query("rater") ?? "");
    if (id === null || (slot !== "left" && slot !== "right")) return jsonError(c, 404, "human-eval images are addressed as /api/human/image/<comparison>/<left|right>?rater=NAME");
    if (!r.success) return jsonError(c, 400, `rater: ${r.error.issues[0]!.message} (give ?rater=NAME)`);
    const p = session.imagePath(id, slot, r.data);
    if (!p) return jsonError(c, 404, `no comparison ${id} with a readable image`);
    const bytes = new Uint8Array(readFileSync(p));
    return c.body(bytes, 200, { "Content-Type": imageType(bytes), "Cache-Control": "private, no-store" });
  });

  app.get("/api/human/results", (c) => {
    if (!session) return jsonError(c, 404, none);
    const raw = c.req.query("bootstrap");
    const bootstrap = raw === undefined ? undefined : parseId(raw);
    if (bootstrap === null || (bootstrap !== undefined && (bootstrap < 1 || bootstrap > 100000))) return jsonError(c, 400, "bootstrap: give an integer from 1 to 100000");
    c.header("Cache-Control", "no-store");
    return c.json(finite({ ...session.results({ bootstrap }), questionsAsked: questions }) as Record<string, unknown>);
  });
}
