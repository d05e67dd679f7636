// Cached reference errors (config `referenceCache: { draws: K }`, `train --reference-cache K`):
// the frozen reference's per-sample errors Rw, Rl computed ONCE, before training, for K fixed
// (t, ε) draws per pair, so the training step runs no reference forward.
//
//   pair identity   a content key: sha256 of the prompt, the micro-conditioning and the pair's
//                   input bytes (pixels, or a training cache's latents). No data source has to
//                   carry ids, and the same pair gets the same key on every rank and on resume.
//   draw k          its own generator, seeded from sha256(run seed, key, k): ε [C, h, w], then t,
//                   then the prompt-dropout coin (dpoStep's order), always on the CPU generator and
//                   moved to the device afterwards. The builder and the step call the same
//                   `sampleDraws`, so the policy gets bit-identical noise to the one the reference saw.
//   prompt dropout  decided per draw at build time (the coin is part of the draw): the policy sees
//                   the caption, or "", exactly as the reference did for that draw.
//   the step        draws k ~ U{0 … K−1} per pair from the step generator, regenerates (t, ε, coin)
//                   of draw k and reads Rw, Rl from the cache.
//
// The file (<outputDir>/reference-cache.safetensors, written atomically): rw, rl f32 [M, K],
// t f64 [M, K], dropped u8 [M, K], keys u8 [M, 8], and the identity (seed, K, dropout, schedule,
// reference weights, data) in its metadata. Needs the same input for a pair every time: no
// random flip or crop, and latents that are the posterior mean (or a training cache).
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { SafetensorsFile, writeSafetensorsSync } from "../io/safetensors.js";
import { Generator, cat, noGrad, rand, randint, randn, tensor, tidy, type Tensor } from "../tensor/index.js";
import { perSampleErrors, type ReferenceErrors } from "../losses/preference.js";
import type { NoiseSchedule } from "../diffusion/index.js";
import type { TrainingNoising } from "../diffusion/flow/training.js";
import {
  noisedPairs,
  withAutocast,
  type DenoisingModel,
  type PairBatch,
  type PairDraws,
  type StepModels,
  type TrainPredictionType,
} from "./dpo-step.js";

export const REFERENCE_CACHE_FILE = "reference-cache.safetensors";
const FORMAT = "diffusion-dpo-reference-cache";
const KEY_BYTES = 8;

/** What a cache was built for; a run reuses a cache only when every field matches. */
export interface ReferenceCacheIdentity {
  format: typeof FORMAT;
  version: 1;
  draws: number;
  seed: number;
  promptDropout: number;
  predictionType: TrainPredictionType;
  /** sha256 of the schedule's ᾱ table (DDPM), or "flow:<T>" for a flow-matching process. */
  noising: string;
  mixedPrecision: "no" | "bf16";
  /** sha256 of the reference's weights (LoRA: the base weights, adapters excluded). */
  reference: string;
  /** The caller's description of the data (path and settings); "" when not given. */
  data: string;
}

/** An identity with this format's name and version. */
export function referenceCacheIdentity(fields: Omit<ReferenceCacheIdentity, "format" | "version">): ReferenceCacheIdentity {
  return { format: FORMAT, version: 1, ...fields };
}

/** The identity fields that differ, as "seed: 3 in the cache, 4 in this run". */
export function identityDifferences(cached: ReferenceCacheIdentity, wanted: ReferenceCacheIdentity): string[] {
  const out: string[] = [];
  for (const k of Object.keys(wanted) as (keyof ReferenceCacheIdentity)[]) {
    if (cached[k] !== wanted[k]) out.push(`${k}: ${JSON.stringify(cached[k])} in the cache, ${JSON.stringify(wanted[k])} in this run`);
  }
  return out;
}

function sha256(parts: (string | ArrayBufferView)[]): Buffer {
  const h = createHash("sha256");
  for (const p of parts) h.update(typeof p === "string" ? Buffer.from(p, "utf8") : new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
  return h.digest();
}

/** sha256 over named tensors (name, dtype, shape, bytes), in name order. */
export function weightsFingerprint(weights: Map<string, Tensor>, exclude: ReadonlySet<string> = new Set()): string {
  const h = createHash("sha256");
  for (const name of [...weights.keys()].sort()) {
    if (exclude.has(name)) continue;
    const t = weights.get(name)!;
    h.update(`${name}|${t.dtype}|${t.shape.join(",")}|`);
    const bytes = t.device === "cpu" ? t.contiguous() : t.cpu();
    try {
      const d = bytes.data();
      h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    } finally {
      if (bytes !== t) bytes.dispose();
    }
  }
  return h.digest("hex");
}

/** The fingerprint of a DDPM schedule's ᾱ table, or of a flow process (its T only). */
export function noisingFingerprint(schedule: NoiseSchedule | undefined, noising: TrainingNoising | undefined): string {
  if (noising !== undefined) return `flow:${noising.numTrainTimesteps}`;
  if (schedule === undefined) throw new Error("reference cache: pass a noise schedule or a noising process");
  return `ddpm:${sha256([new Float64Array(schedule.alphasCumprod)]).toString("hex").slice(0, 32)}`;
}

/** Content keys (16 hex digits) of a batch's pairs, from the step's input before any encoder. */
export function pairKeys(batch: PairBatch): string[] {
  const n = batch.prompts.length;
  const px = batch.pixels.device === "cpu" ? batch.pixels.contiguous() : batch.pixels.cpu();
  try {
    const d = px.data();
    const bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    const per = bytes.byteLength / (2 * n);
    return batch.prompts.map((p, i) =>
      sha256([
        `${px.dtype}|${px.shape.slice(1).join(",")}|${JSON.stringify(batch.micro?.[i] ?? null)}|${p}|`,
        bytes.subarray(i * per, (i + 1) * per),
        bytes.subarray((n + i) * per, (n + i + 1) * per),
      ]).toString("hex").slice(0, 2 * KEY_BYTES),
    );
  } finally {
    if (px !== batch.pixels) px.dispose();
  }
}

/** Generator seed of draw k of a pair (52 bits: exact as a JS number). */
function drawSeed(seed: number, key: string, k: number): number {
  return parseInt(sha256([`${seed}|${key}|${k}`]).toString("hex").slice(0, 13), 16);
}

/** The fixed draws of a run: seed, K and the timestep process. */
export interface DrawSpec {
  seed: number;
  draws: number;
  schedule?: NoiseSchedule;
  noising?: TrainingNoising;
}

/**
 * (ε, t, coin) of draw `draws[i]` of pair `keys[i]`: ε [N, C, h, w] on `device`. One generator per
 * (pair, draw), on the CPU, so the result does not depend on the batch, the device or the rank.
 */
export function sampleDraws(
  spec: DrawSpec, keys: string[], draws: number[], shape: readonly number[], device: string,
): { noisePairs: Tensor; tPairs: number[]; coins: number[] } {
  const T = spec.noising?.numTrainTimesteps ?? spec.schedule?.numTrainTimesteps;
  if (T === undefined) throw new Error("reference cache: pass a noise schedule or a noising process");
  const tPairs: number[] = [];
  const coins: number[] = [];
  const noisePairs = tidy(() => {
    const rows = keys.map((key, i) => {
      const k = draws[i]!;
      if (!Number.isInteger(k) || k < 0 || k >= spec.draws) throw new Error(`reference cache: draw ${k} is outside 0…${spec.draws - 1}`);
      const g = new Generator(drawSeed(spec.seed, key, k));
      try {
        const eps = randn([1, ...shape], g);
        tPairs.push(spec.noising !== undefined ? spec.noising.drawTimesteps(1, g)[0]! : Math.round(randint(0, T, [1], g).item()));
        coins.push(rand([1], g).item());
        return eps;
      } finally {
        g.dispose();
      }
    });
    const all = cat(rows, 0);
    return device === "cpu" ? all : all.toDevice(device);
  });
  return { noisePairs, tPairs, coins };
}

/** PairDraws for dpoStep: content keys and the fixed draws of `spec`. */
export function fixedPairDraws(spec: DrawSpec): PairDraws {
  return { draws: spec.draws, keys: pairKeys, sample: (keys, draws, shape, device) => sampleDraws(spec, keys, draws, shape, device) };
}

export interface BuildReferenceCacheOptions extends DrawSpec {
  /** Where to write the cache (atomically). */
  path: string;
  identity: ReferenceCacheIdentity;
  /** Every training pair once (duplicates are skipped); the caller frees the pixels after each batch is used. */
  pairs: AsyncIterable<PairBatch> | Iterable<PairBatch>;
  /** The frozen reference, run under noGrad. */
  reference: DenoisingModel;
  encodePrompts: StepModels["encodePrompts"];
  /** The image encoder (posterior mean: no noise is passed); identity when absent. */
  encodeImages?: StepModels["encodeImages"];
  predictionType: TrainPredictionType;
  promptDropout: number;
  mixedPrecision?: "no" | "bf16";
  onProgress?: (pairs: number) => void;
}

/** Computes Rw, Rl for every pair and draw, writes the cache and returns it. */
export async function buildReferenceCache(o: BuildReferenceCacheOptions): Promise<ReferenceCache> {
  const K = o.draws;
  const keys: string[] = [];
  const seen = new Set<string>();
  const rw: number[] = [];
  const rl: number[] = [];
  const ts: number[] = [];
  const dropped: number[] = [];
  const noisingProcess = o.noising ?? { schedule: o.schedule!, predictionType: o.predictionType };
  for await (const batch of o.pairs) {
    const all = pairKeys(batch);
    const fresh = all.map((k, i) => [k, i] as const).filter(([k]) => !seen.has(k) && (seen.add(k), true));
    if (fresh.length === 0) continue;
    const rows = fresh.map(([, i]) => i);
    const ks = fresh.map(([k]) => k);
    const n = rows.length;
    const perPair = tidy(() => noGrad(() => {
      const device = batch.pixels.device;
      const ix = tensor(new BigInt64Array([...rows, ...rows.map((i) => all.length + i)].map(BigInt)), [2 * n], { device });
      const pixels = rows.length === all.length ? batch.pixels : batch.pixels.indexSelect(0, ix);
      const x0 = o.encodeImages ? o.encodeImages(pixels) : pixels;
      const prompts = rows.map((i) => batch.prompts[i]!);
      const micro = batch.micro === undefined ? undefined : rows.map((i) => batch.micro![i]!);
      const out = { rw: new Float32Array(n * K), rl: new Float32Array(n * K), t: new Float64Array(n * K), dropped: new Uint8Array(n * K) };
      for (let k = 0; k < K; k++) {
        tidy(() => {
          const d = sampleDraws(o, ks, ks.map(() => k), x0.shape.slice(1), device);
          const used = prompts.map((p, i) => (d.coins[i]! < o.promptDropout ? "" : p));
          const condPairs = micro === undefined ? o.encodePrompts(used) : o.encodePrompts(used, micro);
          const cond = cat([condPairs, condPairs], 0);
          const { noisy, target, tTensor } = noisedPairs(x0, d.noisePairs, d.tPairs, noisingProcess);
          const e = perSampleErrors(withAutocast(device, o.mixedPrecision, () => o.reference(noisy, tTensor, cond)), target);
          const w = e.lw.toFloat32Array();
          const l = e.ll.toFloat32Array();
          for (let i = 0; i < n; i++) {
            out.rw[i * K + k] = w[i]!;
            out.rl[i * K + k] = l[i]!;
            out.t[i * K + k] = d.tPairs[i]!;
            out.dropped[i * K + k] = used[i] === "" && prompts[i] !== "" ? 1 : 0;
          }
        });
      }
      return out;
    }));
    keys.push(...ks);
    rw.push(...perPair.rw);
    rl.push(...perPair.rl);
    ts.push(...perPair.t);
    dropped.push(...perPair.dropped);
    o.onProgress?.(keys.length);
  }
  if (keys.length === 0) throw new Error(`reference cache ${o.path}: the data yielded no pairs`);
  const m = keys.length;
  const keyBytes = new Uint8Array(m * KEY_BYTES);
  keys.forEach((k, i) => keyBytes.set(Buffer.from(k, "hex"), i * KEY_BYTES));
  const tensors = new Map<string, Tensor>([
    ["rw", tensor(new Float32Array(rw), [m, K])],
    ["rl", tensor(new Float32Array(rl), [m, K])],
    ["t", tensor(new Float64Array(ts), [m, K], { dtype: "f64" })],
    ["dropped", tensor(new Uint8Array(dropped), [m, K], { dtype: "u8" })],
    ["keys", tensor(keyBytes, [m, KEY_BYTES], { dtype: "u8" })],
  ]);
  try {
    writeSafetensorsSync(o.path, tensors, { format: FORMAT, identity: JSON.stringify(o.identity) });
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
  return ReferenceCache.load(o.path);
}

/** A written cache, held in memory (8 + 17·K bytes per pair). */
export class ReferenceCache {
  readonly #index: Map<string, number>;
  private constructor(
    readonly path: string,
    readonly identity: ReferenceCacheIdentity,
    readonly pairs: number,
    readonly rw: Float32Array,
    readonly rl: Float32Array,
    readonly t: Float64Array,
    readonly dropped: Uint8Array,
    keys: string[],
  ) {
    this.#index = new Map(keys.map((k, i) => [k, i]));
  }

  get draws(): number {
    return this.identity.draws;
  }

  /** Reads a cache file; throws naming the file when it is not one. */
  static load(path: string): ReferenceCache {
    if (!existsSync(path)) throw new Error(`reference cache ${path} does not exist`);
    const f = SafetensorsFile.open(path);
    try {
      if (f.metadata.format !== FORMAT || f.metadata.identity === undefined) {
        throw new Error(`${path} is not a ${FORMAT} file; delete it (the run rebuilds it) or choose another output folder`);
      }
      const identity = JSON.parse(f.metadata.identity) as ReferenceCacheIdentity;
      const read = <A>(name: string, as: (t: Tensor) => A): A => {
        const t = f.read(name);
        try {
          return as(t);
        } finally {
          t.dispose();
        }
      };
      const keyBytes = read("keys", (t) => new Uint8Array(t.data().buffer.slice(0)));
      const m = keyBytes.length / KEY_BYTES;
      const keys = Array.from({ length: m }, (_, i) => Buffer.from(keyBytes.subarray(i * KEY_BYTES, (i + 1) * KEY_BYTES)).toString("hex"));
      const rw = read("rw", (t) => t.toFloat32Array());
      const rl = read("rl", (t) => t.toFloat32Array());
      const t = read("t", (x) => x.toFloat64Array());
      const dropped = read("dropped", (x) => new Uint8Array(x.data().buffer.slice(0)));
      const K = identity.draws;
      if ([rw, rl, t, dropped].some((a) => a.length !== m * K)) {
        throw new Error(`reference cache ${path}: its tables do not hold ${m} pairs × ${K} draws (a damaged file?); delete it to rebuild`);
      }
      return new ReferenceCache(path, identity, m, rw, rl, t, dropped, keys);
    } finally {
      f.close();
    }
  }

  has(key: string): boolean {
    return this.#index.has(key);
  }

  /**
   * Rw, Rl [N] of draw `draws[i]` of pair `keys[i]`. `tPairs` (the step's regenerated timesteps)
   * are checked against the cached ones: a difference means the draws are not the cache's.
   */
  lookup(keys: string[], draws: number[], tPairs: readonly number[], device: string): ReferenceErrors {
    const K = this.draws;
    const w = new Float32Array(keys.length);
    const l = new Float32Array(keys.length);
    keys.forEach((key, i) => {
      const row = this.#index.get(key);
      if (row === undefined) {
        throw new Error(
          `reference cache ${this.path} has no entry for a training pair (key ${key}): its input differs from the data the cache was built from ` +
            "(random flip or crop, sampled VAE latents, or other data). Train with data.flip false, data.crop center and latentSampling mean, " +
            "or delete the file to rebuild it",
        );
      }
      const j = row * K + draws[i]!;
      if (this.t[j] !== tPairs[i]) {
        throw new Error(`reference cache ${this.path}: pair ${key} draw ${draws[i]} has t = ${this.t[j]} in the cache but ${tPairs[i]} regenerated; delete the file to rebuild it`);
      }
      w[i] = this.rw[j]!;
      l[i] = this.rl[j]!;
    });
    return { rw: tensor(w, [keys.length], { device }), rl: tensor(l, [keys.length], { device }) };
  }
}
