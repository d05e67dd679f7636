// Candidate pairs for AI feedback: sample K images per prompt from a model into the preference
// store, then pair them.
//
// Seeds: candidate j of prompt p gets seed hash(seed, p, j) (31 bits, hashInts of src/data/random),
// recorded with the image, so every candidate can be regenerated alone (a sample depends on its own
// seed only) and different prompts never share noise.
// Pairing: "all" pairs every two candidates of a prompt (K(K−1)/2 pairs, each image in K−1 pairs);
// "consecutive" pairs candidates (0,1), (2,3), … (⌊K/2⌋ disjoint pairs, as Pick-a-Pic shows
// each image once).
// Resuming: a candidate is there when the store holds an image of the prompt with the same model,
// seed, sampler, steps and guidance; only missing candidates are sampled, and pairs that exist
// are kept (addPair is idempotent), so re-running after an interruption, or with more prompts,
// does only the new work.
import { samplerForScheduler, type SamplerName } from "../diffusion/index.js";
import { hashInts, hashString } from "../data/random.js";
import type { PreferenceStore, StoredImage } from "../data/store.js";
import type { TextToImageModel } from "../models/pipeline.js";
import { generate } from "../sample/generate.js";
import { encodePng } from "../sample/png.js";

export type PairingMode = "all" | "consecutive";

export interface GeneratePairsOptions {
  model: TextToImageModel;
  /** Recorded as the images' model (e.g. the model folder); part of what makes a candidate "already there". */
  modelName: string;
  prompts: readonly string[];
  store: PreferenceStore;
  /** Candidates per prompt (≥ 2). */
  k: number;
  seed?: number;
  sampler?: SamplerName;
  steps?: number;
  guidance?: number;
  pairing?: PairingMode;
  /** Images per generate() call (default 16); each call's images are stored before the next. */
  batchSize?: number;
  onEvent?: (e: PairsEvent) => void;
}

export type PairsEvent =
  | { type: "plan"; prompts: number; promptsDone: number; imagesToGenerate: number }
  | { type: "images"; generated: number; total: number }
  | { type: "done"; summary: PairsSummary };

export interface PairsSummary {
  prompts: number;
  /** Prompts whose K candidates were all in the store already. */
  promptsSkipped: number;
  imagesGenerated: number;
  /** Pairs added by this run. */
  pairsAdded: number;
  /** Pairs over the prompts of this run (old and new). */
  pairs: number;
  seconds: number;
}

/** Seed of candidate j of a prompt (see the file comment). */
export function candidateSeed(seed: number, prompt: string, j: number): number {
  return hashInts(seed, hashString(prompt), j) & 0x7fffffff;
}

/** Index pairs (i, j) of K candidates for a pairing mode. */
export function pairIndices(k: number, mode: PairingMode): [number, number][] {
  const out: [number, number][] = [];
  if (mode === "all") {
    for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) out.push([i, j]);
  } else if (mode === "consecutive") {
    for (let i = 0; i + 1 < k; i += 2) out.push([i, i + 1]);
  } else {
    throw new Error(`pairing must be "all" or "consecutive", got "${String(mode)}"`);
  }
  return out;
}

interface Job {
  prompt: string;
  j: number;
  seed: number;
}

/** Samples the missing candidates of every prompt into the store and pairs them. */
export async function generatePairs(opts: GeneratePairsOptions): Promise<PairsSummary> {
  const start = performance.now();
  const { store, model, k } = opts;
  if (!Number.isInteger(k) || k < 2) throw new Error(`pairs: k must be an integer ≥ 2 (candidates per prompt), got ${k}`);
  const seed = opts.seed ?? 0;
  const sampler = opts.sampler ?? samplerForScheduler(model.schedulerClass);
  const steps = opts.steps ?? 50;
  const guidance = opts.guidance ?? 3;
  const pairing = opts.pairing ?? "all";
  const indexPairs = pairIndices(k, pairing);
  const prompts = [...new Set(opts.prompts.map((p) => p.trim()))].filter((p) => p !== "");
  if (prompts.length === 0) throw new Error("pairs: no prompts given");
  const matches = (img: StoredImage, s: number): boolean => {
    const m = img.meta ?? {};
    return img.model === opts.modelName && img.seed === s && m["sampler"] === sampler && m["steps"] === steps && m["guidance"] === guidance;
  };
  // what exists, per prompt and candidate
  const found = new Map<string, (number | null)[]>();
  const jobs: Job[] = [];
  let promptsSkipped = 0;
  for (const prompt of prompts) {
    const existing = store.imagesOfPrompt(prompt);
    const ids: (number | null)[] = [];
    for (let j = 0; j < k; j++) {
      const s = candidateSeed(seed, prompt, j);
      const hit = existing.find((img) => matches(img, s));
      ids.push(hit ? hit.id : null);
      if (!hit) jobs.push({ prompt, j, seed: s });
    }
    if (ids.every((id) => id !== null)) promptsSkipped++;
    found.set(prompt, ids);
  }
  opts.onEvent?.({ type: "plan", prompts: prompts.length, promptsDone: promptsSkipped, imagesToGenerate: jobs.length });
  const batchSize = Math.max(1, opts.batchSize ?? 16);
  let generated = 0;
  let pairsAdded = 0;
  const pairsBefore = store.counts().pairs;
  const pairUp = (prompt: string): void => {
    const ids = found.get(prompt)!;
    if (ids.some((id) => id === null)) return;
    for (const [a, b] of indexPairs) store.addPair(ids[a]!, ids[b]!);
  };
  for (const prompt of prompts) pairUp(prompt); // prompts complete before this run
  for (let lo = 0; lo < jobs.length; lo += batchSize) {
    const chunk = jobs.slice(lo, lo + batchSize);
    const images = generate({ model, prompts: chunk.map((c) => c.prompt), seeds: chunk.map((c) => c.seed), sampler, steps, guidance, batchSize });
    const pngs = await Promise.all(images.map((im) => encodePng(im)));
    const touched = new Set<string>();
    chunk.forEach((c, i) => {
      const im = images[i]!;
      const png = pngs[i]!;
      const id = store.addImage({
        prompt: c.prompt, data: new Uint8Array(png.buffer, png.byteOffset, png.byteLength), format: "png",
        width: im.width, height: im.height, model: opts.modelName, seed: c.seed,
        meta: { sampler, steps, guidance, candidate: c.j, k, pairing, baseSeed: seed },
      });
      found.get(c.prompt)![c.j] = id;
      touched.add(c.prompt);
    });
    for (const p of touched) pairUp(p);
    generated += chunk.length;
    opts.onEvent?.({ type: "images", generated, total: jobs.length });
  }
  pairsAdded = store.counts().pairs - pairsBefore;
  let pairs = 0;
  for (const p of prompts) if (found.get(p)!.every((id) => id !== null)) pairs += indexPairs.length;
  const summary: PairsSummary = {
    prompts: prompts.length, promptsSkipped, imagesGenerated: generated, pairsAdded, pairs,
    seconds: (performance.now() - start) / 1000,
  };
  opts.onEvent?.({ type: "done", summary });
  return summary;
}
