// Pretraining images/s and sampling images/s of the emoji base model's architecture (TINY UNet +
// 2-layer CLIP text encoder, 32×32 RGB), beside PyTorch running the same architecture and the
// same work (bench/torch/pretrain_sample.py) in the same run, alternating run by run.
//   pretraining: `pretrain()` steps of batch 32 (noising, text encoder + UNet forward/backward,
//     grad clipping, AdamW, EMA), images/s = 32 · steps / seconds.
//   sampling: `generate()` for 16 prompts, DDIM 25 steps, guidance 3 (batch 32 per UNet call),
//     images/s = 16 / seconds.
// Our side also tokenizes captions and gathers real emoji; PyTorch's draws random ids and images.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { BenchCase, BenchResult } from "../types.js";
import { loadEmojiDataset } from "../../src/datasets/emoji.js";
import { EMOJI_UNET_CONFIG, baseEmojiWeights, createEmojiModel } from "../../src/datasets/emojiModel.js";
import { clipTextConfigToJson } from "../../src/models/clip/text-model.js";
import { disposeTextToImageModel } from "../../src/models/pipeline.js";
import { toDiffusersConfig } from "../../src/models/unet/config.js";
import { generate } from "../../src/sample/generate.js";
import { pretrain, pretrainModelFrom } from "../../src/train/pretrain.js";
import { setNumThreads } from "../../src/tensor/index.js";
import { median } from "./engine.js";

const BATCH = 32;
const PROMPTS = 16;
const SAMPLE_STEPS = 25;

class Worker {
  #pending: ((v: Record<string, unknown>) => void)[] = [];
  #child;
  #err = "";
  constructor(threads: number, cfg: unknown) {
    const script = fileURLToPath(new URL("../torch/pretrain_sample.py", import.meta.url));
    this.#child = spawn("/usr/bin/python3", [script, "serve", String(threads), JSON.stringify(cfg)], { stdio: ["pipe", "pipe", "pipe"] });
    this.#child.stderr.on("data", (d: Buffer) => { this.#err = (this.#err + d.toString()).slice(-2000); });
    createInterface({ input: this.#child.stdout }).on("line", (l) => this.#pending.shift()?.(JSON.parse(l) as Record<string, unknown>));
  }
  call(op: string, n = 1): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`PyTorch worker did not answer "${op}": ${this.#err.split("\n").slice(-2).join(" ")}`)), 600_000);
      this.#pending.push((v) => { clearTimeout(timer); resolve(v); });
      this.#child.stdin.write(JSON.stringify({ op, n }) + "\n");
    });
  }
  close(): void { this.#child.stdin.end(JSON.stringify({ op: "quit" }) + "\n"); }
}

export const pretrainSampleBench: BenchCase = {
  name: "pretrain-sample",
  async run({ quick, threads }) {
    setNumThreads(threads);
    const reps = quick ? 2 : 3;
    const trainSteps = quick ? 2 : 4;
    const train = await loadEmojiDataset({ split: "train" });
    const t2i = createEmojiModel(train, 0);
    const model = pretrainModelFrom(t2i);
    const data = { pixels: train.pixels, captions: train.items.map((i) => i.caption), size: 32, weights: baseEmojiWeights(train) };
    const cfg = {
      unet: toDiffusersConfig(EMOJI_UNET_CONFIG), text: clipTextConfigToJson(t2i.textEncoder.config),
      batch: BATCH, prompts: PROMPTS, steps: SAMPLE_STEPS, seq_len: t2i.textEncoder.config.maxPositionEmbeddings,
    };
    const worker = new Worker(threads, cfg);
    const prompts = train.items.slice(0, PROMPTS).map((i) => i.caption);
    const ours = { pretrain: [] as number[], sample: [] as number[] };
    const theirs = { pretrain: [] as number[], sample: [] as number[] };
    let error: string | undefined;
    try {
      const ourParams = t2i.unet.numParameters() + t2i.textEncoder.numParameters();
      const refParams = (await worker.call("params")).value as number;
      if (refParams !== ourParams) throw new Error(`pretrain-sample: ours has ${ourParams} parameters, bench/torch/pretrain_sample.py ${refParams}; keep the architectures identical`);
      for (let r = 0; r < reps + 1; r++) {
        const t0 = performance.now();
        const res = pretrain({ model, data, steps: trainSteps, batchSize: BATCH, seed: r, emaDecay: 0.995, warmupSteps: 0 });
        const trainSec = (performance.now() - t0) / 1000 / trainSteps;
        res.ema.forEach((t) => t.dispose());
        const t1 = performance.now();
        generate({ model: t2i, prompts, seeds: prompts.map((_, i) => i), sampler: "ddim", steps: SAMPLE_STEPS, guidance: 3, batchSize: PROMPTS });
        const sampleSec = (performance.now() - t1) / 1000;
        let tp: number | undefined;
        let ts: number | undefined;
        if (error === undefined) {
          try {
            tp = (await worker.call("pretrain", trainSteps)).seconds as number;
            ts = (await worker.call("sample", 1)).seconds as number;
          } catch (e) { error = (e as Error).message; }
        }
        if (r === 0) continue; // warm-up round
        ours.pretrain.push(trainSec);
        ours.sample.push(sampleSec);
        if (tp !== undefined && ts !== undefined) { theirs.pretrain.push(tp); theirs.sample.push(ts); }
      }
    } finally {
      worker.close();
      disposeTextToImageModel(t2i);
    }
    const result = (name: string, per: number, o: number[], t: number[]): BenchResult => {
      const mine = per / median(o);
      const ref = t.length ? per / median(t) : undefined;
      return {
        name, unit: "images/s", ours: mine,
        ...(ref !== undefined ? { reference: ref, ratio: mine / ref } : {}),
        ...(error ? { note: `PyTorch reference failed: ${error}` } : {}),
      };
    };
    return [
      result(`emoji pretraining (batch ${BATCH}, step incl. EMA)`, BATCH, ours.pretrain, theirs.pretrain),
      result(`emoji sampling (DDIM ${SAMPLE_STEPS}, CFG 3, ${PROMPTS} prompts)`, PROMPTS, ours.sample, theirs.sample),
    ];
  },
};
