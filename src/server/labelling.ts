// What the labelling page needs from the preference store: the next pair for a rater (shown in a
// per-rater left/right order, so position bias averages out), progress, votes and undo.
import type { PreferenceStore, StoredPair, VoteChoice } from "../data/store.js";

export interface ShownImage {
  /** Which image of the stored pair this is ("a" = image_a). */
  side: "a" | "b";
  image: number;
  url: string;
}

export interface ShownPair {
  id: number;
  prompt: string;
  left: ShownImage;
  right: ShownImage;
}

export interface Progress {
  /** Pairs this rater has answered (skips included). */
  done: number;
  /** Pairs in the store. */
  total: number;
}

/** FNV-1a, 32 bit: a stable coin per (pair, rater). */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** Whether `rater` sees image b on the left for this pair (fixed per pair and rater). */
export function swappedFor(pairId: number, rater: string): boolean {
  return (fnv1a(`${pairId}\u0000${rater}`) & 1) === 1;
}

export function imageUrl(id: number): string {
  return `/api/image/${id}`;
}

export function showPair(p: StoredPair, rater: string): ShownPair {
  const a: ShownImage = { side: "a", image: p.imageA, url: imageUrl(p.imageA) };
  const b: ShownImage = { side: "b", image: p.imageB, url: imageUrl(p.imageB) };
  const swap = swappedFor(p.id, rater);
  return { id: p.id, prompt: p.prompt, left: swap ? b : a, right: swap ? a : b };
}

export function progressOf(store: PreferenceStore, rater: string): Progress {
  const done = (store.db.prepare("SELECT COUNT(*) AS n FROM votes v JOIN pairs p ON p.id = v.pair_id WHERE v.rater = ?").get(rater) as { n: number }).n;
  const total = (store.db.prepare("SELECT COUNT(*) AS n FROM pairs").get() as { n: number }).n;
  return { done, total };
}

export function nextFor(store: PreferenceStore, rater: string): { pair: ShownPair | null; progress: Progress } {
  const p = store.nextPairFor(rater);
  return { pair: p ? showPair(p, rater) : null, progress: progressOf(store, rater) };
}

/** Records a vote (the store writes it in one transaction) and answers with the next pair. */
export function castVote(store: PreferenceStore, rater: string, pairId: number, choice: VoteChoice): { created: boolean; pair: ShownPair | null; progress: Progress } | null {
  if (!store.pair(pairId)) return null;
  const { created } = store.vote(pairId, rater, choice);
  return { created, ...nextFor(store, rater) };
}

/**
 * Removes the rater's most recent vote (in one transaction, so two tabs undoing at once remove two
 * different votes) and returns that pair, to be shown again.
 */
export function undoLast(store: PreferenceStore, rater: string): { undone: number | null; pair: ShownPair | null; progress: Progress } {
  const tx = store.db.transaction(() => {
    const last = store.db.prepare("SELECT pair_id FROM votes WHERE rater = ? ORDER BY created_at DESC, rowid DESC LIMIT 1").get(rater) as { pair_id: number } | undefined;
    if (!last) return null;
    store.db.prepare("DELETE FROM votes WHERE pair_id = ? AND rater = ?").run(last.pair_id, rater);
    return last.pair_id;
  });
  const undone = tx.immediate();
  if (undone === null) return { undone: null, ...nextFor(store, rater) };
  const p = store.pair(undone);
  return { undone, pair: p ? showPair(p, rater) : null, progress: progressOf(store, rater) };
}

/** The media type of encoded image bytes, from their signature. */
export function imageType(bytes: Uint8Array): string {
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return "image/png";
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return "image/jpeg";
  if (bytes[0] === 0x47 && bytes[1] === 0x49 && bytes[2] === 0x46) return "image/gif";
  if (bytes[0] === 0x52 && bytes[1] === 0x49 && bytes[2] === 0x46 && bytes[3] === 0x46 && bytes[8] === 0x57 && bytes[9] === 0x45 && bytes[10] === 0x42 && bytes[11] === 0x50) return "image/webp";
  return "application/octet-stream";
}
