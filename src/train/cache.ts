// A training cache: a preference data set encoded ONCE with the model's frozen VAE and text
// encoder(s), so a DPO run never runs them (for SDXL the two CLIP encoders and the VAE encoder are
// a large part of a step's memory and time).
//
//   <dir>/training-cache.json     manifest: model, resolution, latent shape, counts, SDXL or not
//   <dir>/pairs.jsonl             per pair: prompt index, original size, crop top-left
//   <dir>/latents-NNNNN.safetensors   "<i>.chosen", "<i>.rejected": scaled VAE latents [C, h, w]
//   <dir>/prompts-NNNNN.safetensors   "<u>.hidden" [L, D] (+ "<u>.pooled" [P] for SDXL); prompt 0 is ""
//
// What caching fixes: each pair's augmentation (use a deterministic one: center crop, no flip)
// and its VAE latents (the posterior mean; the uncached run can sample the posterior each step).
// Prompt dropout still works: the empty prompt's encoding is cached (prompt 0), and SDXL's time
// ids are packed per step from each pair's cached micro-conditioning.
import { existsSync, mkdirSync, readFileSync, writeFileSync, appendFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile, writeSafetensorsSync } from "../io/safetensors.js";
import { encodePrompts, encodePromptsSdxl, isSdxlModel, type TextToImageModel } from "../models/pipeline.js";
import { defaultMicroConditioning, packConditioning, timeIdsOf } from "../models/sdxl/conditioning.js";
import { Rng, hashInts } from "../data/random.js";
import { keep, noGrad, stack, tensor, tidy, type Tensor } from "../tensor/index.js";
import type { PairBatch, PairMicroConditioning } from "./dpo-step.js";
import type { PairBatchSource } from "./data.js";

export const CACHE_MANIFEST = "training-cache.json";
const FORMAT = "diffusion-dpo-training-cache";

export interface TrainingCacheManifest {
  format: typeof FORMAT;
  version: 1;
  /** The model folder whose VAE and text encoders made the cache (a run must train that model). */
  model: string;
  resolution: number;
  latentShape: [number, number, number];
  pairs: number;
  prompts: number;
  sdxl: boolean;
  /** Pairs per latents file and prompts per prompts file. */
  chunkSize: number;
  latents: "mean";
}

interface CachedPair {
  prompt: number;
  originalSize: [number, number];
  cropTopLeft: [number, number];
}

/** What the cache writer reads: batches in order, as src/data's PreferenceLoader yields them. */
export interface CacheInputBatch {
  prompts: string[];
  pixels: Float32Array;
  shape: [number, number, number, number];
  geometry?: { originalSize: [number, number]; cropTopLeft: [number, number] }[];
}

export type CacheEvent = { type: "progress"; pairs: number; prompts: number };

export interface WriteCacheOptions {
  model: TextToImageModel;
  /** Where the model was loaded from (recorded in the manifest). */
  modelPath: string;
  batches: AsyncIterable<CacheInputBatch>;
  dir: string;
  resolution: number;
  chunkSize?: number;
  device?: string;
  onEvent?: (e: CacheEvent) => void;
}

const chunkName = (kind: "latents" | "prompts", k: number) => `${kind}-${String(k).padStart(5, "0")}.safetensors`;

/** Encodes every batch once and writes the cache folder (refuses a folder that holds other files). */
export async function writeTrainingCache(o: WriteCacheOptions): Promise<TrainingCacheManifest> {
  if (existsSync(o.dir) && readdirSync(o.dir).length > 0) {
    throw new Error(`training cache: ${o.dir} is not empty; choose a new folder (an existing cache is reused by passing it as the data)`);
  }
  mkdirSync(o.dir, { recursive: true });
  const chunk = o.chunkSize ?? 256;
  const { model } = o;
  const sdxl = isSdxlModel(model);
  const promptIndex = new Map<string, number>();
  let promptBuffer = new Map<string, Tensor>();
  let latentBuffer = new Map<string, Tensor>();
  let pairs = 0;
  let latentShape: [number, number, number] | null = null;
  const flushPrompts = (force: boolean) => {
    if (promptBuffer.size === 0 || (!force && promptIndex.size % chunk !== 0)) return;
    writeSafetensorsSync(join(o.dir, chunkName("prompts", Math.floor((promptIndex.size - 1) / chunk))), promptBuffer, { format: "pt" });
    for (const t of promptBuffer.values()) t.dispose();
    promptBuffer = new Map();
  };
  const addPrompts = (texts: string[]) => {
    const fresh = [...new Set(texts)].filter((t) => !promptIndex.has(t));
    if (fresh.length === 0) return;
    noGrad(() => tidy(() => {
      const e = sdxl ? encodePromptsSdxl(model, fresh) : { hidden: encodePrompts(model, fresh), pooled: null };
      fresh.forEach((text, i) => {
        const u = promptIndex.size;
        promptIndex.set(text, u);
        promptBuffer.set(`${u}.hidden`, keepRow(e.hidden, i));
        if (e.pooled) promptBuffer.set(`${u}.pooled`, keepRow(e.pooled, i));
        flushPrompts(false);
      });
    }));
  };
  const pairsPath = join(o.dir, "pairs.jsonl");
  writeFileSync(pairsPath, "");
  try {
    addPrompts([""]);
    for await (const b of o.batches) {
      const n = b.prompts.length;
      addPrompts(b.prompts);
      const lines: string[] = [];
      noGrad(() => tidy(() => {
        const px = tensor(b.pixels, b.shape, { device: o.device ?? "cpu" });
        const latents = model.vae ? model.vae.encodeLatents(px) : px;
        latentShape ??= latents.shape.slice(1) as [number, number, number];
        for (let i = 0; i < n; i++) {
          const id = pairs + i;
          latentBuffer.set(`${id}.chosen`, keepRow(latents, i));
          latentBuffer.set(`${id}.rejected`, keepRow(latents, n + i));
          const g = b.geometry?.[i];
          const fallback = defaultMicroConditioning(b.shape[2], b.shape[3]);
          lines.push(JSON.stringify({
            prompt: promptIndex.get(b.prompts[i]!)!, originalSize: g?.originalSize ?? fallback.originalSize, cropTopLeft: g?.cropTopLeft ?? fallback.cropTopLeft,
          } satisfies CachedPair));
          if ((id + 1) % chunk === 0) {
            writeSafetensorsSync(join(o.dir, chunkName("latents", Math.floor(id / chunk))), latentBuffer, { format: "pt" });
            for (const t of latentBuffer.values()) t.dispose();
            latentBuffer = new Map();
          }
        }
      }));
      pairs += n;
      appendFileSync(pairsPath, `${lines.join("\n")}\n`);
      o.onEvent?.({ type: "progress", pairs, prompts: promptIndex.size });
    }
    if (latentBuffer.size > 0) writeSafetensorsSync(join(o.dir, chunkName("latents", Math.floor((pairs - 1) / chunk))), latentBuffer, { format: "pt" });
    flushPrompts(true);
  } finally {
    for (const t of latentBuffer.values()) t.dispose();
    for (const t of promptBuffer.values()) t.dispose();
  }
  if (pairs === 0 || latentShape === null) throw new Error("training cache: the data yielded no pairs");
  const manifest: TrainingCacheManifest = {
    format: FORMAT, version: 1, model: o.modelPath, resolution: o.resolution, latentShape, pairs, prompts: promptIndex.size, sdxl,
    chunkSize: chunk, latents: "mean",
  };
  writeFileSync(join(o.dir, "prompts.json"), `${JSON.stringify([...promptIndex.keys()])}\n`);
  // the manifest last: a folder without it is an unfinished cache
  writeFileSync(join(o.dir, CACHE_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

/** row i of t, contiguous and kept out of the surrounding tidy scope. */
function keepRow(t: Tensor, i: number): Tensor {
  return keep(t.slice(0, i, i + 1).squeeze(0).contiguous().clone());
}

/** Whether `dir` holds a finished training cache. */
export function isTrainingCache(dir: string): boolean {
  return existsSync(join(dir, CACHE_MANIFEST));
}

/** A written cache, read lazily (a few files open at a time). */
export class TrainingCache {
  readonly manifest: TrainingCacheManifest;
  readonly pairs: CachedPair[];
  readonly promptTexts: string[];
  readonly #promptIndex: Map<string, number>;
  readonly #open = new Map<string, SafetensorsFile>();

  constructor(readonly dir: string) {
    const path = join(dir, CACHE_MANIFEST);
    if (!existsSync(path)) throw new Error(`training cache: ${path} is missing (not a cache folder, or an unfinished one: write it again)`);
    const m = JSON.parse(readFileSync(path, "utf8")) as TrainingCacheManifest;
    if (m.format !== FORMAT || m.version !== 1) throw new Error(`training cache: ${path} is not a version-1 ${FORMAT} manifest`);
    this.manifest = m;
    this.pairs = readFileSync(join(dir, "pairs.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as CachedPair);
    this.promptTexts = JSON.parse(readFileSync(join(dir, "prompts.json"), "utf8")) as string[];
    if (this.pairs.length !== m.pairs || this.promptTexts.length !== m.prompts) {
      throw new Error(`training cache: ${dir} lists ${this.pairs.length} pairs and ${this.promptTexts.length} prompts, its manifest ${m.pairs} and ${m.prompts}`);
    }
    this.#promptIndex = new Map(this.promptTexts.map((t, u) => [t, u]));
  }

  #file(kind: "latents" | "prompts", index: number): SafetensorsFile {
    const name = chunkName(kind, Math.floor(index / this.manifest.chunkSize));
    let f = this.#open.get(name);
    if (f === undefined) {
      if (this.#open.size >= 8) {
        const [oldest, file] = this.#open.entries().next().value as [string, SafetensorsFile];
        file.close();
        this.#open.delete(oldest);
      }
      f = SafetensorsFile.open(join(this.dir, name));
      this.#open.set(name, f);
    }
    return f;
  }

  /** Latents of pairs `ids`: [chosen…, rejected…] [2N, C, h, w]. */
  latents(ids: number[], device = "cpu"): Tensor {
    return tidy(() => {
      const read = (i: number, which: "chosen" | "rejected") => this.#file("latents", i).read(`${i}.${which}`);
      const t = stack([...ids.map((i) => read(i, "chosen")), ...ids.map((i) => read(i, "rejected"))], 0);
      return device === "cpu" ? t : t.toDevice(device);
    });
  }

  /**
   * The frozen text encoder(s) replaced by the cache: prompts (after dropout: "" is cached too) →
   * the conditioning encodePrompts would give; SDXL packs each pair's time ids from `micro`.
   */
  encodePrompts(prompts: string[], micro?: PairMicroConditioning[], device = "cpu"): Tensor {
    return tidy(() => {
      const ids = prompts.map((p) => {
        const u = this.#promptIndex.get(p);
        if (u === undefined) throw new Error(`training cache ${this.dir}: prompt ${JSON.stringify(p.slice(0, 80))} is not in the cache`);
        return u;
      });
      const read = (u: number, key: "hidden" | "pooled") => this.#file("prompts", u).read(`${u}.${key}`);
      let hidden = stack(ids.map((u) => read(u, "hidden")), 0);
      if (device !== "cpu") hidden = hidden.toDevice(device);
      if (!this.manifest.sdxl) return hidden;
      let pooled = stack(ids.map((u) => read(u, "pooled")), 0);
      if (device !== "cpu") pooled = pooled.toDevice(device);
      const res = this.manifest.resolution;
      const list = micro ?? prompts.map(() => defaultMicroConditioning(res, res));
      const timeIds = tensor(new Float32Array(list.flatMap(timeIdsOf)), [prompts.length, 6], { device });
      return packConditioning(hidden, { textEmbeds: pooled, timeIds });
    });
  }

  close(): void {
    for (const f of this.#open.values()) f.close();
    this.#open.clear();
  }
}

/**
 * The cache as the trainer's data: latents in place of pixels (pass no encodeImages), each epoch
 * a seeded permutation, the last partial batch dropped; random access by batch index, so a
 * resumed run sees the same batches.
 */
export class CachedPairSource implements PairBatchSource {
  readonly batchesPerEpoch: number;
  readonly #perms = new Map<number, number[]>();
  constructor(readonly cache: TrainingCache, readonly batchSize: number, readonly seed = 0, readonly device = "cpu") {
    const m = cache.manifest.pairs;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > m) {
      throw new Error(`CachedPairSource: batch size ${batchSize} must be an integer in [1, ${m}] (the cached pairs)`);
    }
    this.batchesPerEpoch = Math.floor(m / batchSize);
  }

  permutation(epoch: number): number[] {
    let p = this.#perms.get(epoch);
    if (p === undefined) {
      p = new Rng(hashInts(this.seed, epoch)).shuffle(Array.from({ length: this.cache.manifest.pairs }, (_, i) => i));
      if (this.#perms.size > 4) this.#perms.clear();
      this.#perms.set(epoch, p);
    }
    return p;
  }

  batch(index: number): PairBatch {
    const epoch = Math.floor(index / this.batchesPerEpoch);
    const k = index % this.batchesPerEpoch;
    return this.#pairs(this.permutation(epoch).slice(k * this.batchSize, (k + 1) * this.batchSize));
  }

  /** All cached pairs in index order. */
  *everyPair(): Generator<PairBatch> {
    const m = this.cache.manifest.pairs;
    for (let i = 0; i < m; i += this.batchSize) {
      yield this.#pairs(Array.from({ length: Math.min(this.batchSize, m - i) }, (_, j) => i + j));
    }
  }

  #pairs(ids: number[]): PairBatch {
    const res = this.cache.manifest.resolution;
    return {
      prompts: ids.map((i) => this.cache.promptTexts[this.cache.pairs[i]!.prompt]!),
      pixels: this.cache.latents(ids, this.device),
      micro: ids.map((i) => {
        const p = this.cache.pairs[i]!;
        return { originalSize: p.originalSize, cropTopLeft: p.cropTopLeft, targetSize: [res, res] };
      }),
    };
  }
}
