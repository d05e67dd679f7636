// Trains the shipped emoji base model and writes it to models/emoji-base (EMA weights, diffusers
// folder) plus models/emoji-base/training.json (command, settings, time, loss curve).
//
//   node --import tsx scripts/pretrain-emoji.ts --steps 1200 --batch 32 --lr 1e-3 [--resume]
//
// Checkpoints go to runs/emoji-base/ (resume with --resume); progress goes to stderr. To stop early
// (the loop is synchronous, so signals wait), create the file <run>/STOP: the run checkpoints and
// saves the model as it stands. --init <checkpoint folder> starts from that checkpoint's EMA weights
// with a fresh optimizer and lr schedule (how the shipped v-prediction model was fine-tuned).
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadEmojiDataset } from "../src/datasets/emoji.js";
import { EMOJI_UNET_LAYOUTS, baseEmojiWeights, createEmojiModel } from "../src/datasets/emojiModel.js";
import { loadModelFolder, saveModelFolder } from "../src/models/pipeline.js";
import { setNumThreads } from "../src/tensor/index.js";
import { applyEma, loadCheckpointWeights, pretrain, pretrainModelFrom } from "../src/train/pretrain.js";

const { values } = parseArgs({
  options: {
    steps: { type: "string", default: "1200" },
    batch: { type: "string", default: "32" },
    lr: { type: "string", default: "1e-3" },
    warmup: { type: "string", default: "50" },
    ema: { type: "string", default: "0.995" },
    seed: { type: "string", default: "0" },
    run: { type: "string", default: "runs/emoji-base" },
    out: { type: "string", default: "models/emoji-base" },
    resume: { type: "boolean", default: false },
    "checkpoint-every": { type: "string", default: "100" },
    // libtorch intra-op threads; 1 is several times faster per CPU-second on a busy shared machine
    threads: { type: "string" },
    // UNet layout of a fresh model: "tiny" (the shipped one) or "deep" (EMOJI_UNET_LAYOUTS)
    layout: { type: "string", default: "tiny" },
    // start from another run's checkpoint weights (EMA), with a fresh optimizer and lr schedule
    init: { type: "string" },
    // start from a saved model folder (e.g. the shipped models/emoji-base), fresh optimizer and schedule
    "init-model": { type: "string" },
  },
});
if (values.threads) setNumThreads(Number(values.threads));
const steps = Number(values.steps);
const batchSize = Number(values.batch);
const seed = Number(values.seed);
const train = await loadEmojiDataset({ split: "train", size: 32 });
const layout = values.layout as keyof typeof EMOJI_UNET_LAYOUTS;
if (!(layout in EMOJI_UNET_LAYOUTS)) throw new Error(`--layout must be one of ${Object.keys(EMOJI_UNET_LAYOUTS).join(", ")}, got "${layout}"`);
const t2i = values["init-model"] ? loadModelFolder(values["init-model"]) : createEmojiModel(train, seed, layout);
const model = pretrainModelFrom(t2i);
if (values.init && !values.resume) loadCheckpointWeights(model, values.init, "ema");
mkdirSync(values.run!, { recursive: true });
rmSync(join(values.run!, "STOP"), { force: true });
const log: string[] = [];
const started = new Date().toISOString();
const result = pretrain({
  model,
  data: { pixels: train.pixels, captions: train.items.map((i) => i.caption), size: 32, weights: baseEmojiWeights(train) },
  steps, batchSize, lr: Number(values.lr), warmupSteps: Number(values.warmup), lrSchedule: "cosine",
  emaDecay: Number(values.ema), promptDropout: 0.1, seed, out: values.run, checkpointEvery: Number(values["checkpoint-every"]), resume: values.resume,
  shouldStop: () => existsSync(join(values.run!, "STOP")),
  logEvery: 10,
  onEvent: (e) => {
    log.push(JSON.stringify(e));
    writeFileSync(join(values.run!, "log.jsonl"), log.join("\n") + "\n");
    if (e.type === "step") {
      process.stderr.write(`step ${e.step}/${e.totalSteps} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ${e.imagesPerSecond.toFixed(1)} img/s eta ${Math.round(e.etaSeconds)}s\n`);
    } else process.stderr.write(`${JSON.stringify(e)}\n`);
  },
});
applyEma(model, result.ema);
saveModelFolder(values.out!, t2i);
writeFileSync(join(values.out!, "training.json"), JSON.stringify({
  command: `node --import tsx scripts/pretrain-emoji.ts ${process.argv.slice(2).join(" ")}`.trim(),
  started, finished: new Date().toISOString(), seconds: result.seconds, steps: result.step, batchSize, lr: Number(values.lr),
  emaDecay: Number(values.ema), promptDropout: 0.1, seed, initFrom: values.init ?? values["init-model"] ?? null, trainImages: train.items.length,
  parameters: { unet: t2i.unet.numParameters(), textEncoder: t2i.textEncoder.numParameters() },
  losses: result.losses,
}, null, 1) + "\n");
process.stderr.write(`saved ${values.out} after ${result.seconds.toFixed(0)} s\n`);
