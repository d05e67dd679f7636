// The demo's prompt sets, drawn from the emoji captions (src/datasets/emoji.ts):
//
//   train    captions of training emoji: the prompts of the preference pairs DPO trains on
//   heldout  captions of held-out emoji (never seen by the base model's pretraining, nor by DPO):
//            the evaluation prompts and the prompts of the held-out pairs for implicit accuracy
//
// Only base emoji are used (no skin-tone variants: "waving hand: dark skin tone" would make the
// sets near-duplicates of one another). Each set is ordered round-robin across the 9 categories,
// each category's captions in a seeded hash order, so the first N of a set cover every category
// about equally and the choice is deterministic.
import { createHash } from "node:crypto";
import { EMOJI_CATEGORIES, listEmoji, type EmojiItem } from "../datasets/emoji.js";
import type { EvalPrompt } from "../eval/prompts.js";
import { DemoError, type EvalCaptions } from "./settings.js";

export interface DemoPromptSets {
  /** Training captions, round-robin over categories. */
  train: EvalPrompt[];
  /** Held-out captions, round-robin over categories. */
  heldout: EvalPrompt[];
}

function rank(seed: number, text: string): string {
  return createHash("sha256").update(`${seed}\u0000${text}`).digest("hex");
}

/** Items in round-robin category order; within a category in the seeded hash order. */
export function roundRobin(items: readonly EmojiItem[], seed: number): EmojiItem[] {
  const groups = EMOJI_CATEGORIES.map((c) =>
    items.filter((it) => it.category === c)
      .map((it) => [rank(seed, it.caption), it] as const)
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([, it]) => it));
  const out: EmojiItem[] = [];
  for (let i = 0; out.length < items.length; i++) {
    for (const g of groups) if (i < g.length) out.push(g[i]!);
  }
  return out;
}

/** The demo's training and held-out caption sets (see the file comment). */
export function demoPromptSets(seed = 0): DemoPromptSets {
  const base = listEmoji({ skinTones: false });
  const toPrompt = (it: EmojiItem): EvalPrompt => ({ prompt: it.caption, category: it.category });
  return {
    train: roundRobin(base.filter((it) => !it.heldout), seed).map(toPrompt),
    heldout: roundRobin(base.filter((it) => it.heldout), seed).map(toPrompt),
  };
}

/**
 * Splits the held-out set into evaluation prompts and held-out pair prompts: disjoint when there
 * are enough captions (evaluation first), else the pair prompts wrap around to the start.
 */
export function splitHeldout(
  heldout: readonly EvalPrompt[], evalCount: number, pairCount: number, what = "held-out captions",
): { evalPrompts: EvalPrompt[]; pairPrompts: EvalPrompt[] } {
  if (evalCount > heldout.length) throw new DemoError(`demo: ${evalCount} evaluation prompts asked for, but there are only ${heldout.length} ${what}`);
  if (pairCount > heldout.length) throw new DemoError(`demo: ${pairCount} held-out pair prompts asked for, but there are only ${heldout.length} ${what}`);
  const evalPrompts = heldout.slice(0, evalCount);
  const start = evalCount + pairCount <= heldout.length ? evalCount : 0;
  return { evalPrompts, pairPrompts: heldout.slice(start, start + pairCount) };
}

/**
 * The pool the evaluation and held-out pair captions are split from (see DemoSettings.evalCaptions):
 * the held-out emoji, or the training emoji after every caption DPO's rounds train on (rounds take
 * consecutive slices of `perRound` from the start of sets.train, see roundCaptions).
 */
export function evaluationPool(
  sets: DemoPromptSets, evalCaptions: EvalCaptions, perRound: number, rounds: number,
): { pool: EvalPrompt[]; what: string } {
  if (evalCaptions === "heldout-emoji") return { pool: sets.heldout, what: "held-out emoji captions" };
  const used = perRound * rounds;
  return { pool: sets.train.slice(Math.min(used, sets.train.length)), what: `pretraining emoji captions left after the ${used} that DPO trains on` };
}
