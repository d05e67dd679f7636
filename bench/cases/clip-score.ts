// CLIP scoring images/s: our ClipScorer (src/feedback/clip-rewards.ts) on the clip-reward
// reference's tiny CLIPModel (vision 32×32, patch 8, 2 layers × 32 wide; text 2 layers × 32) beside
// a plain-torch transcription of the same forward (bench/torch/clip_score.py, same weights), in the
// same run, alternating. One call scores B = 64 (image, prompt) rows: the case's two emoji and two
// prompts repeated.
//   model:    image features of the preprocessed pixels + text features + cosines (both sides)
//   full:     ours only — reward.score on 64×64 RGB images, i.e. plus our Pillow-exact bicubic resize,
//             crop, normalisation and tokenisation in JS
// The twin's first cosines are checked against ours before timing (the two compute the same).
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import type { BenchCase, BenchResult } from "../types.js";
import { ClipScorer, clipReward, loadClipBackbone } from "../../src/feedback/clip-rewards.js";
import { convertToRgb } from "../../src/models/clip/image-processor.js";
import { fromBytes, noGrad, setNumThreads, tidy } from "../../src/tensor/index.js";
import type { RgbImage } from "../../src/sample/generate.js";
import { median } from "./engine.js";

const BATCH = 64;
const CASE_DIR = fileURLToPath(new URL("../../../shared/data/reference-models/clip-reward", import.meta.url));

class Worker {
  #pending: ((v: Record<string, unknown>) => void)[] = [];
  #child;
  #err = "";
  constructor(threads: number, cfg: unknown) {
    const script = fileURLToPath(new URL("../torch/clip_score.py", import.meta.url));
    this.#child = spawn("/usr/bin/python3", [script, "serve", String(threads), JSON.stringify(cfg)], { stdio: ["pipe", "pipe", "pipe"] });
    this.#child.stderr.on("data", (d: Buffer) => { this.#err = (this.#err + d.toString()).slice(-2000); });
    this.#child.on("exit", (code) => { for (const p of this.#pending.splice(0)) p({ error: `exited ${code}: ${this.#err.split("\n").slice(-2).join(" ")}` }); });
    createInterface({ input: this.#child.stdout }).on("line", (l) => this.#pending.shift()?.(JSON.parse(l) as Record<string, unknown>));
  }
  call(op: string, n = 1): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`PyTorch worker did not answer "${op}": ${this.#err.split("\n").slice(-2).join(" ")}`)), 300_000);
      this.#pending.push((v) => {
        clearTimeout(timer);
        if (typeof v.error === "string") reject(new Error(v.error)); else resolve(v);
      });
      this.#child.stdin.write(JSON.stringify({ op, n }) + "\n");
    });
  }
  close(): void { this.#child.stdin.end(JSON.stringify({ op: "quit" }) + "\n"); }
}

export const clipScoreBench: BenchCase = {
  name: "clip-score",
  async run({ quick, threads }) {
    setNumThreads(threads);
    const reps = quick ? 3 : 7;
    const calls = quick ? 2 : 5;
    const caseJson = JSON.parse(readFileSync(join(CASE_DIR, "case.json"), "utf8")) as { components: { clip: { config: unknown } }; values: { prompts: string[] } };
    const backbone = loadClipBackbone(join(CASE_DIR, "clip"));
    const scorer = new ClipScorer(backbone, { batchSize: BATCH });
    const reward = clipReward("clip", scorer);
    const base: RgbImage[] = [];
    for (const f of ["1f34e.png", "1f600.png"]) {
      const { data, info } = await sharp(join(CASE_DIR, "images", f)).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
      const rgb = convertToRgb({ width: info.width, height: info.height, channels: 4, data: new Uint8Array(data) });
      base.push({ width: rgb.width, height: rgb.height, data: rgb.data });
    }
    const images = Array.from({ length: BATCH }, (_, i) => base[i % 2]!);
    const prompts = Array.from({ length: BATCH }, (_, i) => caseJson.values.prompts[i % 2]!);
    const rawPx = readFileSync(join(CASE_DIR, "io", "pixel_values.bin"));
    const px2 = fromBytes(new Uint8Array(rawPx.buffer, rawPx.byteOffset, rawPx.byteLength), [2, 3, 32, 32], "f32");
    const pixels = px2.repeat([BATCH / 2, 1, 1, 1]);
    // ours, model only: the same tensors the twin sees (rows alternate image 0/1 and prompt 0/1)
    const modelOnly = (): number[] => noGrad(() => tidy(() => {
      const a = backbone.model.imageFeatures(pixels);
      const b = scorer.textFeatures(prompts);
      const an = a.div(a.norm([1], true)), bn = b.div(b.norm([1], true));
      return an.mul(bn).sum([1]).toArray() as number[];
    }));
    const worker = new Worker(threads, { dir: CASE_DIR, batch: BATCH, config: caseJson.components.clip.config });
    const ours = { model: [] as number[], full: [] as number[] };
    const theirs: number[] = [];
    let error: string | undefined;
    try {
      const check = (await worker.call("check")).value as number[];
      const mine = modelOnly().slice(0, 4);
      const worst = Math.max(...mine.map((v, i) => Math.abs(v - check[i]!)));
      if (!(worst < 1e-5)) throw new Error(`clip-score: the PyTorch twin's cosines ${check.join(", ")} differ from ours ${mine.join(", ")} (max ${worst})`);
      for (let r = 0; r < reps + 1; r++) {
        let t0 = performance.now();
        for (let c = 0; c < calls; c++) modelOnly();
        const m = (performance.now() - t0) / 1000 / calls;
        t0 = performance.now();
        for (let c = 0; c < calls; c++) await reward.score(images, prompts);
        const f = (performance.now() - t0) / 1000 / calls;
        let t: number | undefined;
        if (error === undefined) {
          try { t = (await worker.call("score", calls)).seconds as number; } catch (e) { error = (e as Error).message; }
        }
        if (r === 0) continue; // warm-up
        ours.model.push(m);
        ours.full.push(f);
        if (t !== undefined) theirs.push(t);
      }
    } finally {
      worker.close();
      pixels.dispose();
      px2.dispose();
      reward.dispose?.();
    }
    const perSec = (s: number) => BATCH / s;
    const model: BenchResult = {
      name: `clip score, tiny CLIP model forward (batch ${BATCH})`, unit: "images/s", ours: perSec(median(ours.model)),
      ...(theirs.length ? { reference: perSec(median(theirs)), ratio: median(theirs) / median(ours.model) } : {}),
      ...(error ? { note: `PyTorch reference failed: ${error}` } : {}),
    };
    const full: BenchResult = {
      name: `clip score, tiny CLIP reward.score incl. JS preprocessing (batch ${BATCH}, 64×64 → 32×32)`, unit: "images/s", ours: perSec(median(ours.full)),
      note: "ours only: Pillow-exact resize, crop, normalise and tokenise in JS, then the same forward",
    };
    return [model, full];
  },
};
