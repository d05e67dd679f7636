// AI feedback: label the store's pairs with a reward, as the official script's --choice_model
// does (it scores both images of a Pick-a-Pic pair with PickScore/HPS/CLIP/aesthetics and keeps
// the winner), but in batches and written back to the store.
//
// For each pair not yet labelled by this reward (or every pair with `relabel`), both images are
// scored for the pair's prompt and stored as ai_labels(score_a, score_b, margin). Resolution
// (src/data/store.ts) then makes the higher-scoring image the chosen one, and a pair whose scores
// differ by no more than the margin a tie, which training skips. An image shared by several pairs
// is scored once per batch.
import { decodeImage } from "../data/images.js";
import type { PreferenceStore } from "../data/store.js";
import type { RgbImage } from "../sample/generate.js";
import type { RewardModel } from "./reward.js";

export interface LabelPairsOptions {
  store: PreferenceStore;
  reward: RewardModel;
  /** |score_a − score_b| ≤ margin → tie (default 0). */
  margin?: number;
  /** Pairs per batch (default 64). */
  batchSize?: number;
  /** Score pairs this reward labelled before, too (default false: skip them). */
  relabel?: boolean;
  onEvent?: (e: LabelEvent) => void;
}

export type LabelEvent =
  | { type: "plan"; pairs: number; alreadyLabelled: number }
  | { type: "batch"; labelled: number; total: number }
  | { type: "done"; summary: LabelSummary };

export interface LabelSummary {
  reward: string;
  margin: number;
  /** Pairs scored by this run. */
  labelled: number;
  /** Pairs skipped because this reward had labelled them already. */
  alreadyLabelled: number;
  /** Of the labelled: image a won, image b won, tie (within the margin). */
  a: number;
  b: number;
  ties: number;
  /** Mean |score_a − score_b| over the labelled pairs. */
  meanGap: number;
  seconds: number;
}

/** Labels stored pairs with a reward (see the file comment). */
export async function labelPairs(opts: LabelPairsOptions): Promise<LabelSummary> {
  const start = performance.now();
  const { store, reward } = opts;
  const margin = opts.margin ?? 0;
  if (!(margin >= 0)) throw new Error(`label: margin must be a number ≥ 0, got ${margin}`);
  const batchSize = Math.max(1, opts.batchSize ?? 64);
  const labelledBefore = new Set(
    (store.db.prepare("SELECT pair_id FROM ai_labels WHERE reward = ?").all(reward.name) as { pair_id: number }[]).map((r) => r.pair_id),
  );
  const all = store.pairIds();
  const todo = opts.relabel ? all : all.filter((id) => !labelledBefore.has(id));
  const alreadyLabelled = all.length - todo.length;
  opts.onEvent?.({ type: "plan", pairs: todo.length, alreadyLabelled });
  let a = 0, b = 0, ties = 0, gap = 0;
  for (let lo = 0; lo < todo.length; lo += batchSize) {
    const pairs = todo.slice(lo, lo + batchSize).map((id) => {
      const p = store.pair(id);
      if (!p) throw new Error(`${store.path}: pair ${id} disappeared while labelling`);
      return p;
    });
    // unique (image, prompt) jobs of the batch
    const key = (img: number, prompt: number) => `${img}:${prompt}`;
    const jobs = new Map<string, { image: number; prompt: string; index: number }>();
    for (const p of pairs) {
      for (const img of [p.imageA, p.imageB]) {
        const k = key(img, p.promptId);
        if (!jobs.has(k)) jobs.set(k, { image: img, prompt: p.prompt, index: jobs.size });
      }
    }
    const list = [...jobs.values()];
    const images: RgbImage[] = await Promise.all(list.map(async (j) => {
      const raw = await decodeImage(store.imageBytes(j.image), { source: store.path, row: j.image, field: `image ${j.image}` });
      return { width: raw.width, height: raw.height, data: raw.data };
    }));
    const scores = await reward.score(images, list.map((j) => j.prompt));
    if (scores.length !== list.length) throw new Error(`reward "${reward.name}" returned ${scores.length} scores for ${list.length} images`);
    const rows = pairs.map((p) => {
      const sa = scores[jobs.get(key(p.imageA, p.promptId))!.index]!;
      const sb = scores[jobs.get(key(p.imageB, p.promptId))!.index]!;
      if (!Number.isFinite(sa) || !Number.isFinite(sb)) throw new Error(`reward "${reward.name}" gave a non-finite score (${sa}, ${sb}) for pair ${p.id}`);
      const d = sa - sb;
      gap += Math.abs(d);
      if (Math.abs(d) <= margin) ties++;
      else if (d > 0) a++;
      else b++;
      return { pairId: p.id, reward: reward.name, scoreA: sa, scoreB: sb, margin };
    });
    store.setAiLabels(rows);
    opts.onEvent?.({ type: "batch", labelled: Math.min(lo + batchSize, todo.length), total: todo.length });
  }
  const summary: LabelSummary = {
    reward: reward.name, margin, labelled: todo.length, alreadyLabelled, a, b, ties,
    meanGap: todo.length ? gap / todo.length : 0, seconds: (performance.now() - start) / 1000,
  };
  opts.onEvent?.({ type: "done", summary });
  return summary;
}
