// Measures the shipped emoji model: a category classifier trained on the real TRAIN emoji scores
// (a) the real held-out emoji and (b) the model's samples for the held-out captions (one sample per
// held-out base emoji, same category label). Writes models/emoji-base/eval.json and a grid of
// samples next to the real images (models/emoji-base/heldout-grid.png).
//
//   node --import tsx scripts/eval-emoji-base.ts [--model models/emoji-base] [--steps 25] [--guidance 3]
//        [--sweep 1,2,3,5]   also score these guidance scales (accuracy per scale in eval.json)
//        [--threads 1]       libtorch threads (1 is fastest per CPU-second on a busy machine)
//        [--captions train]  caption pretraining emoji instead (194 base emoji spread over the train
//                            split; what `demo --eval-captions dpo-unseen` samples): eval-train.json,
//                            train-grid.png
//
// The classifier is models/emoji-classifier (loadEmojiClassifier); when that folder is missing it
// is trained (--classifierSteps) and saved there.
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { emojiImage, loadEmojiDataset, selectSplit } from "../src/datasets/emoji.js";
import {
  classifyImages, evaluateClassifier, loadEmojiClassifier, saveEmojiClassifier, scorePredictions, trainEmojiClassifier, type EmojiClassifier,
} from "../src/feedback/emoji-classifier.js";
import { setNumThreads } from "../src/tensor/index.js";
import { loadModelFolder } from "../src/models/pipeline.js";
import { generate, type RgbImage } from "../src/sample/generate.js";
import { makeGrid } from "../src/sample/png.js";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "models/emoji-base" },
    steps: { type: "string", default: "25" },
    guidance: { type: "string", default: "3" },
    sampler: { type: "string", default: "ddim" },
    classifierSteps: { type: "string", default: "1200" },
    classifier: { type: "string", default: "models/emoji-classifier" },
    sweep: { type: "string", default: "" },
    threads: { type: "string" },
    captions: { type: "string", default: "heldout" },
  },
});
if (values.captions !== "heldout" && values.captions !== "train") throw new Error(`--captions must be heldout or train, got "${values.captions}"`);
const onTrain = values.captions === "train";
if (values.threads) setNumThreads(Number(values.threads));
const log = (s: string) => process.stderr.write(`${s}\n`);
const train = await loadEmojiDataset({ split: "train" });
const held = await loadEmojiDataset({ split: "heldout" });
// one item per held-out base emoji (skin-tone variants share the caption's category)
const baseIdx = held.items.map((it, i) => [it, i] as const).filter(([it]) => it.name === it.baseName).map(([, i]) => i);
const heldoutBase = { ...held, items: baseIdx.map((i) => held.items[i]!), pixels: new Uint8Array(baseIdx.flatMap((i) => Array.from(emojiImage(held, i)))) };
// as many pretraining base emoji, spread evenly over the train split
const trainBaseIdx = train.items.map((it, i) => [it, i] as const).filter(([it]) => it.name === it.baseName).map(([, i]) => i);
const trainPick = Array.from({ length: baseIdx.length }, (_, k) => trainBaseIdx[Math.floor((k * trainBaseIdx.length) / baseIdx.length)]!);
const trainBase = { ...train, items: trainPick.map((i) => train.items[i]!), pixels: new Uint8Array(trainPick.flatMap((i) => Array.from(emojiImage(train, i)))) };
const heldBase = onTrain ? trainBase : heldoutBase;

let clf: EmojiClassifier;
let classifierSteps = Number(values.classifierSteps);
const t0 = Date.now();
if (existsSync(join(values.classifier!, "config.json"))) {
  const loaded = loadEmojiClassifier(values.classifier!);
  clf = loaded.model;
  const steps = (loaded.config.training as { steps?: number } | undefined)?.steps;
  if (steps !== undefined) classifierSteps = steps;
  log(`classifier loaded from ${values.classifier}`);
} else {
  clf = trainEmojiClassifier({ train, steps: classifierSteps, seed: 0, onEvent: (e) => { if (e.type === "step" && e.step % 100 === 0) log(`classifier step ${e.step} loss ${e.loss.toFixed(3)}`); } });
  saveEmojiClassifier(values.classifier!, clf, { function: "trainEmojiClassifier", steps: classifierSteps, batchSize: 64, lr: 2e-3, seed: 0 });
}
const classifierSeconds = (Date.now() - t0) / 1000;
const realAll = evaluateClassifier(clf, held);
const realBase = evaluateClassifier(clf, heldBase);
const realTrain = evaluateClassifier(clf, selectSplit(train, "all"));
log(`real ${onTrain ? "pretraining" : "held-out"} base emoji: accuracy ${realBase.accuracy.toFixed(3)}; all held-out images (with skin tones) ${realAll.accuracy.toFixed(3)}`);

const model = loadModelFolder(values.model!);
const prompts = heldBase.items.map((i) => i.caption);
const seeds = prompts.map((_, i) => 1000 + i);
const t1 = Date.now();
const samples = generate({
  model, prompts, seeds, sampler: values.sampler as "ddim", steps: Number(values.steps), guidance: Number(values.guidance), batchSize: 32,
  onEvent: (e) => { if (e.type === "step" && e.done === e.total) log(`sampled batch ${e.batch + 1}/${e.batches}`); },
});
const sampleSeconds = (Date.now() - t1) / 1000;
const flat = new Uint8Array(samples.length * 32 * 32 * 3);
samples.forEach((s, i) => flat.set(s.data, i * 32 * 32 * 3));
const fake = scorePredictions(classifyImages(clf, flat, samples.length, 32), heldBase.items.map((i) => i.label));
// the unconditional baseline: the same classifier on samples for the empty prompt
const uncond = generate({ model, prompts: prompts.map(() => ""), seeds, sampler: values.sampler as "ddim", steps: Number(values.steps), guidance: 1, batchSize: 32 });
const uflat = new Uint8Array(uncond.length * 32 * 32 * 3);
uncond.forEach((s, i) => uflat.set(s.data, i * 32 * 32 * 3));
const uncondScore = scorePredictions(classifyImages(clf, uflat, uncond.length, 32), heldBase.items.map((i) => i.label));
log(`samples for ${onTrain ? "pretraining" : "held-out"} captions: accuracy ${fake.accuracy.toFixed(3)}; unconditional samples: ${uncondScore.accuracy.toFixed(3)}`);
// other guidance scales, same seeds
const sweep: { guidance: number; accuracy: number; balancedAccuracy: number }[] = [
  { guidance: Number(values.guidance), accuracy: fake.accuracy, balancedAccuracy: fake.balancedAccuracy },
];
for (const g of values.sweep!.split(",").filter((x) => x.trim() !== "").map(Number)) {
  if (g === Number(values.guidance)) continue;
  const imgs = generate({ model, prompts, seeds, sampler: values.sampler as "ddim", steps: Number(values.steps), guidance: g, batchSize: 32 });
  const f = new Uint8Array(imgs.length * 32 * 32 * 3);
  imgs.forEach((s, i) => f.set(s.data, i * 32 * 32 * 3));
  const r = scorePredictions(classifyImages(clf, f, imgs.length, 32), heldBase.items.map((i) => i.label));
  sweep.push({ guidance: g, accuracy: r.accuracy, balancedAccuracy: r.balancedAccuracy });
  log(`guidance ${g}: accuracy ${r.accuracy.toFixed(3)} (balanced ${r.balancedAccuracy.toFixed(3)})`);
}
sweep.sort((a, b) => a.guidance - b.guidance);

const strip = (r: typeof fake) => ({ accuracy: r.accuracy, balancedAccuracy: r.balancedAccuracy, count: r.count, perCategory: r.perCategory });
writeFileSync(join(values.model!, onTrain ? "eval-train.json" : "eval.json"), JSON.stringify({
  command: `node --import tsx scripts/eval-emoji-base.ts ${process.argv.slice(2).join(" ")}`.trim(),
  sampler: values.sampler, steps: Number(values.steps), guidance: Number(values.guidance), seeds: "1000 + i",
  classifier: { trainSteps: classifierSteps, seed: 0, seconds: classifierSeconds, trainAccuracy: realTrain.accuracy },
  [onTrain ? "realTrainBase" : "realHeldoutBase"]: strip(realBase), realHeldoutWithSkinTones: strip(realAll),
  [onTrain ? "samplesTrainCaptions" : "samplesHeldoutCaptions"]: strip(fake), samplesUnconditional: strip(uncondScore), guidanceSweep: sweep,
  chance: 1 / 9, sampleSeconds,
}, null, 1) + "\n");
// grid: 24 of the captions, real image then sample
const pick = Array.from({ length: 24 }, (_, k) => Math.floor((k * heldBase.items.length) / 24));
const gridImgs: RgbImage[] = [];
const labels: string[] = [];
for (const i of pick) {
  gridImgs.push({ width: 32, height: 32, data: emojiImage(heldBase, i) }, samples[i]!);
  labels.push(`real: ${heldBase.items[i]!.name}`, `sample: ${heldBase.items[i]!.caption}`);
}
writeFileSync(join(values.model!, onTrain ? "train-grid.png" : "heldout-grid.png"), await makeGrid(gridImgs, labels, { cols: 8, scale: 3, labelLines: 3, fontSize: 9 }));
log(onTrain ? "wrote eval-train.json and train-grid.png" : "wrote eval.json and heldout-grid.png");
