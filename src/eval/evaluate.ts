// The whole evaluation: sample base and tuned with the same seeds, score with the rewards, win
// rates, diversity, best-of-n, implicit accuracy on held-out pairs; then the output folder:
//
//   <out>/eval.json           { summary, samples }  (the contract the web app reads; see EvalJson)
//   <out>/report.html         the human report (src/eval/report.ts)
//   <out>/images/base/<i>.png, <out>/images/tuned/<i>.png   sample i of `samples`
//
// The library emits events; the CLI draws them.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { RgbImage } from "../sample/generate.js";
import { encodePng } from "../sample/png.js";
import type { RewardModel } from "../feedback/reward.js";
import { openPreferenceData, type OpenOptions } from "../data/open.js";
import { tensor } from "../tensor/index.js";
import type { PairBatch } from "../train/dpo-step.js";
import type { EvalModels, EvalSamplerName } from "./models.js";
import type { EvalPrompt } from "./prompts.js";
import { clusterBootstrap, winRate, winRateByCategory, type ComparedSample, type WinRate } from "./stats.js";
import { diversity, type DiversityResult } from "./diversity.js";
import { bestOfN, type BestOfNResult } from "./bestOfN.js";
import { implicitRewardAccuracy, type ImplicitAccuracyResult } from "./implicit.js";
import { renderReport } from "./report.js";
import { HUMAN_DB_NAME } from "./human.js";
import { humanForReport } from "./humanReport.js";
import type { RunLog } from "./runLog.js";

import type { EvalConfig, EvalJson, EvalSample, EvalSummary, ImplicitSummary, MeanScore, MeanScoreSummary, WinRateSummary } from "./evalJson.js";

export type { EvalConfig, EvalJson, EvalSample, EvalSummary, ImplicitSummary, MeanScore, MeanScoreSummary, WinRateSummary } from "./evalJson.js";

export type EvalPhase = "sample-base" | "sample-tuned" | "score" | "best-of-n" | "implicit" | "write";

export type EvalEvent =
  | { type: "phase"; phase: EvalPhase; total: number }
  | { type: "progress"; phase: EvalPhase; done: number; total: number; detail?: string }
  | { type: "written"; path: string };

/** Mean of `values` (sample i belongs to prompt `prompts[i]`) with its bootstrap interval. */
export function meanScore(values: readonly number[], prompts: readonly number[], replicates: number, seed = 0): MeanScore {
  const clusters = new Map<number, [number, number]>();
  values.forEach((v, i) => {
    const c = clusters.get(prompts[i]!) ?? [0, 0];
    c[0] += v;
    c[1] += 1;
    clusters.set(prompts[i]!, c);
  });
  const mean = values.length ? values.reduce((a, b) => a + b, 0) / values.length : Number.NaN;
  return { mean, interval: clusterBootstrap([...clusters.values()], replicates, seed) };
}

export interface PairsInput {
  /** A preference data spec for openPreferenceData (parquet, folder, jsonl, sqlite). */
  spec: string;
  open?: OpenOptions;
  /** At most this many pairs (default all). */
  limit?: number;
  batchSize?: number;
}

export interface EvaluateOptions {
  /** The UNet pair (loadModelPair) or the SD3 / Flux pair (loadFlowModelPair); loadEvalModels picks. */
  models: EvalModels;
  prompts: EvalPrompt[];
  /** Name of the prompt set (the file), for the config. */
  promptSource: string;
  /** Seeds per prompt (the same for base and tuned). */
  seeds: number[];
  sampler: EvalSamplerName;
  steps: number;
  guidance: number;
  rewards: RewardModel[];
  tieMargin?: number;
  bootstrap?: number;
  /** Largest n of the best-of-n baseline; 0 or absent: off. */
  bestOfN?: number;
  /** First seed of the best-of-n candidates (default 1 000 000, far from the evaluation seeds). */
  bestOfNSeed?: number;
  pairs?: PairsInput;
  implicitDraws?: number;
  beta?: number;
  /** The training run (curves, config) for the report. */
  run?: { path: string; log: RunLog };
  outDir: string;
  /** Blind A/B votes to merge into the report (default <outDir>/human.sqlite when present; votes on other images are left out). */
  human?: string;
  /** Embed images in report.html as data URIs (default true); else link images/ beside it. */
  embedImages?: boolean;
  batchSize?: number;
  onEvent?: (e: EvalEvent) => void;
}

async function scoreAll(
  reward: RewardModel, images: RgbImage[], prompts: string[], chunk: number, tick: (n: number) => void,
): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < images.length; i += chunk) {
    const s = await reward.score(images.slice(i, i + chunk), prompts.slice(i, i + chunk));
    if (s.length !== Math.min(chunk, images.length - i)) {
      throw new Error(`reward "${reward.name}" returned ${s.length} scores for ${Math.min(chunk, images.length - i)} images`);
    }
    for (const v of s) {
      if (!Number.isFinite(v)) throw new Error(`reward "${reward.name}" returned a non-finite score (${v})`);
      out.push(v);
    }
    tick(s.length);
  }
  return out;
}

/** Batches [chosen…, rejected…] of a preference data set at the model's resolution, in file order. */
export async function* preferenceBatches(input: PairsInput, resolution: number): AsyncGenerator<PairBatch> {
  const data = openPreferenceData(input.spec, input.open);
  const batchSize = input.batchSize ?? 8;
  const limit = input.limit ?? Infinity;
  let seen = 0;
  try {
    const loader = data.loader({
      batchSize, augment: { resolution, crop: "center", flip: false }, shuffle: false, dropLast: false, workers: 0,
    });
    for await (const b of loader.batches(1)) {
      const n = b.prompts.length;
      const take = Math.min(n, limit - seen);
      if (take <= 0) break;
      const px = tensor(b.pixels, b.shape);
      // the consumer is done with a batch when it asks for the next one: free its pixels then
      if (take === n) {
        yield { prompts: b.prompts, pixels: px };
        px.dispose();
      } else {
        const idx = [...Array(take).keys()];
        const sel = tensor(new BigInt64Array([...idx, ...idx.map((i) => i + n)].map(BigInt)), [2 * take]);
        const picked = px.indexSelect(0, sel);
        px.dispose();
        sel.dispose();
        yield { prompts: b.prompts.slice(0, take), pixels: picked };
        picked.dispose();
      }
      seen += take;
      if (seen >= limit) break;
    }
  } finally {
    await data.close();
  }
}

/** Runs the evaluation and writes the output folder; returns what eval.json holds. */
export async function evaluate(o: EvaluateOptions): Promise<EvalJson> {
  const emit = (e: EvalEvent) => o.onEvent?.(e);
  if (o.prompts.length === 0) throw new Error("evaluate: no prompts");
  if (o.seeds.length === 0) throw new Error("evaluate: needs at least one seed");
  if (o.rewards.length === 0) throw new Error("evaluate: needs at least one reward model to judge the win rate");
  const names = o.rewards.map((r) => r.name);
  if (new Set(names).size !== names.length) throw new Error(`evaluate: reward names repeat (${names.join(", ")})`);
  const tieMargin = o.tieMargin ?? 0;
  const bootstrap = o.bootstrap ?? 2000;
  const batchSize = o.batchSize ?? 16;

  // 1. samples: every (prompt, seed), prompt-major
  const jobs = o.prompts.flatMap((p, pi) => o.seeds.map((seed) => ({ ...p, pi, seed })));
  const jobPrompts = jobs.map((j) => j.prompt);
  const jobSeeds = jobs.map((j) => j.seed);
  const sampleSide = (which: "base" | "tuned"): RgbImage[] => {
    const phase: EvalPhase = which === "base" ? "sample-base" : "sample-tuned";
    emit({ type: "phase", phase, total: jobs.length });
    let done = 0;
    return o.models.sample(which, {
      prompts: jobPrompts, seeds: jobSeeds, sampler: o.sampler, steps: o.steps, guidance: o.guidance, batchSize,
      onImage: (prompt) => emit({ type: "progress", phase, done: ++done, total: jobs.length, detail: prompt }),
    });
  };
  const baseImages = sampleSide("base");
  const tunedImages = sampleSide("tuned");

  // 2. scores
  emit({ type: "phase", phase: "score", total: 2 * jobs.length * o.rewards.length });
  let scored = 0;
  const tick = (n: number) => emit({ type: "progress", phase: "score", done: (scored += n), total: 2 * jobs.length * o.rewards.length });
  const scores: Record<string, { base: number[]; tuned: number[] }> = {};
  for (const r of o.rewards) {
    scores[r.name] = {
      base: await scoreAll(r, baseImages, jobPrompts, batchSize, tick),
      tuned: await scoreAll(r, tunedImages, jobPrompts, batchSize, tick),
    };
  }

  // 3. win rates
  const winRates: Record<string, WinRateSummary> = {};
  const ties: Record<string, number> = {};
  for (const r of o.rewards) {
    const s = scores[r.name]!;
    const compared: ComparedSample[] = jobs.map((j, i) => ({
      prompt: j.pi, delta: s.tuned[i]! - s.base[i]!, ...(j.category !== undefined ? { category: j.category } : {}),
    }));
    const wr = winRate(compared, { tieMargin, bootstrap });
    winRates[r.name] = { reward: r.name, description: r.description, ...wr, byCategory: winRateByCategory(compared, { tieMargin, bootstrap }) };
    ties[r.name] = wr.ties;
  }

  const meanScores: Record<string, MeanScoreSummary> = {};
  for (const r of o.rewards) {
    const s = scores[r.name]!;
    const pis = jobs.map((j) => j.pi);
    meanScores[r.name] = {
      base: meanScore(s.base, pis, bootstrap), tuned: meanScore(s.tuned, pis, bootstrap),
      delta: meanScore(s.tuned.map((t, i) => t - s.base[i]!), pis, bootstrap),
    };
  }

  // 4. diversity (needs ≥ 2 seeds)
  const S = o.seeds.length;
  const div = S >= 2
    ? diversity(o.prompts.map((p, pi) => ({
      prompt: p.prompt, base: baseImages.slice(pi * S, (pi + 1) * S), tuned: tunedImages.slice(pi * S, (pi + 1) * S),
    })))
    : null;

  // 5. best-of-n: candidates from the base model at seeds bestOfNSeed + j; reference = the first evaluation seed
  let bon: Record<string, BestOfNResult> | null = null;
  const maxN = o.bestOfN ?? 0;
  if (maxN > 0) {
    const first = o.bestOfNSeed ?? 1_000_000;
    const candJobs = o.prompts.flatMap((p) => Array.from({ length: maxN }, (_, j) => ({ prompt: p.prompt, seed: first + j })));
    emit({ type: "phase", phase: "best-of-n", total: candJobs.length });
    let done = 0;
    const cand = o.models.sample("base", {
      prompts: candJobs.map((c) => c.prompt), seeds: candJobs.map((c) => c.seed), sampler: o.sampler, steps: o.steps,
      guidance: o.guidance, batchSize,
      onImage: () => emit({ type: "progress", phase: "best-of-n", done: ++done, total: candJobs.length }),
    });
    bon = {};
    for (const r of o.rewards) {
      const cs = await scoreAll(r, cand, candJobs.map((c) => c.prompt), batchSize, () => {});
      const refs = o.prompts.map((_, pi) => scores[r.name]!.base[pi * S]!);
      const perPrompt = o.prompts.map((_, pi) => cs.slice(pi * maxN, (pi + 1) * maxN));
      // the tuned model's win rate on the same reference samples (first seed of each prompt)
      const tunedFirst = winRate(o.prompts.map((_, pi) => ({
        prompt: pi, delta: scores[r.name]!.tuned[pi * S]! - scores[r.name]!.base[pi * S]!,
      })), { tieMargin, bootstrap });
      bon[r.name] = bestOfN(refs, perPrompt, tunedFirst.rate, maxN, { tieMargin, bootstrap });
    }
  }

  // 6. implicit-reward accuracy on held-out pairs
  let implicit: ImplicitSummary | null = null;
  if (o.pairs !== undefined) {
    emit({ type: "phase", phase: "implicit", total: o.pairs.limit ?? 0 });
    const resolution = baseImages[0]!.width;
    const r = await implicitRewardAccuracy(preferenceBatches(o.pairs, resolution), {
      policy: o.models.denoiser("tuned"),
      reference: o.models.denoiser("base"),
      ...o.models.implicitInputs(),
      draws: o.implicitDraws ?? 10,
      beta: o.beta,
      onEvent: (e) => emit({ type: "progress", phase: "implicit", done: e.pairsDone, total: o.pairs?.limit ?? e.pairsDone, detail: `acc ${e.accuracySoFar.toFixed(3)}` }),
    });
    const { insides: _insides, ...rest } = r;
    implicit = { ...rest, source: o.pairs.spec };
  }

  // 7. the output folder
  emit({ type: "phase", phase: "write", total: jobs.length });
  mkdirSync(join(o.outDir, "images", "base"), { recursive: true });
  mkdirSync(join(o.outDir, "images", "tuned"), { recursive: true });
  const samples: EvalSample[] = [];
  const png: { base: Buffer; tuned: Buffer }[] = [];
  for (let i = 0; i < jobs.length; i++) {
    const j = jobs[i]!;
    const base = `images/base/${i}.png`;
    const tuned = `images/tuned/${i}.png`;
    const pb = await encodePng(baseImages[i]!);
    const pt = await encodePng(tunedImages[i]!);
    writeFileSync(join(o.outDir, base), pb);
    writeFileSync(join(o.outDir, tuned), pt);
    png.push({ base: pb, tuned: pt });
    const sc: EvalSample["scores"] = {};
    for (const r of o.rewards) sc[r.name] = { base: scores[r.name]!.base[i]!, tuned: scores[r.name]!.tuned[i]! };
    samples.push({ prompt: j.prompt, seed: j.seed, ...(j.category !== undefined ? { category: j.category } : {}), base, tuned, scores: sc });
    emit({ type: "progress", phase: "write", done: i + 1, total: jobs.length });
  }
  const src = o.models.source;
  const config: EvalConfig = {
    base: src.base, tuned: src.tuned, tunedKind: o.models.kind, ...(src.lora ? { lora: src.lora } : {}),
    prompts: o.promptSource, promptCount: o.prompts.length, seeds: o.seeds, sampler: o.sampler, steps: o.steps,
    guidance: o.guidance, rewards: names, tieMargin, bootstrap, bestOfN: maxN,
    pairs: o.pairs?.spec ?? null, pairsLimit: o.pairs?.limit ?? null, implicitDraws: o.implicitDraws ?? 10,
    beta: implicit?.beta ?? o.beta ?? 5000, run: o.run?.path ?? null, training: o.run?.log.config ?? null,
    createdAt: new Date().toISOString(),
  };
  const result: EvalJson = { summary: { winRate: winRates, meanScores, ties, implicitAccuracy: implicit, diversity: div, bestOfN: bon, config }, samples };
  const jsonPath = join(o.outDir, "eval.json");
  // JSON has no NaN: write null where a number is undefined (e.g. decisive when every sample tied)
  writeFileSync(jsonPath, `${JSON.stringify(result, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2)}\n`);
  emit({ type: "written", path: jsonPath });
  const embedImages = o.embedImages ?? true;
  const html = renderReport(result, {
    run: o.run?.log ?? null,
    human: humanForReport(o.human ?? join(o.outDir, HUMAN_DB_NAME), png, { bootstrap }),
    image: embedImages
      ? (i, which) => `data:image/png;base64,${png[i]![which].toString("base64")}`
      : (i, which) => samples[i]![which],
  });
  const htmlPath = join(o.outDir, "report.html");
  writeFileSync(htmlPath, html);
  emit({ type: "written", path: htmlPath });
  return result;
}
