import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { JsonlSource } from "../../src/data/jsonl.js";
import { PreferenceLoader } from "../../src/data/loader.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer } from "../../src/train/trainer.js";
import { LoaderBatchSource } from "../../src/train/data.js";
import { loadCheckpoint, listCheckpoints } from "../../src/train/checkpoint.js";
import { TinyDenoiser, encodePrompts } from "./tiny.js";

/** 6 JSONL pairs of 8×8 PNGs: the chosen image is lighter grey than the rejected one. */
async function jsonlFixture(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "dpo-jsonl-"));
  const lines: string[] = [];
  for (let i = 0; i < 6; i++) {
    for (const [name, v] of [[`c${i}.png`, 170 + 10 * i], [`r${i}.png`, 60 + 10 * i]] as const) {
      const px = new Uint8Array(8 * 8 * 3).map((_, k) => (v + 7 * (k % 5)) % 256);
      await sharp(px, { raw: { width: 8, height: 8, channels: 3 } }).png().toFile(join(dir, name));
    }
    lines.push(JSON.stringify({ prompt: `pair ${i}`, chosen: `c${i}.png`, rejected: `r${i}.png` }));
  }
  writeFileSync(join(dir, "pairs.jsonl"), `${lines.join("\n")}\n`);
  return join(dir, "pairs.jsonl");
}

function makeRun(jsonl: string, outputDir: string, stopAfterSteps?: number) {
  const loader = new PreferenceLoader(new JsonlSource(jsonl), { batchSize: 2, augment: { resolution: 8, flip: true }, seed: 4, workers: 0 });
  const data = new LoaderBatchSource(loader, 2);
  const config = loadTrainConfig({
    flags: { seed: 2, batchSize: 2, maxSteps: 5, learningRate: 1e-3, scaleLr: false, warmupSteps: 0, lrSchedule: "constant", checkpointEvery: 1, keepCheckpoints: 0, outputDir, resume: true, beta: 1000 },
  });
  const model = new TinyDenoiser(3, 8, 1);
  const trainer = new DpoTrainer({ config, model, encodePrompts, schedule: new NoiseSchedule(), data, stopAfterSteps });
  return { trainer, dispose: () => { trainer.dispose(); model.dispose(); } };
}

test("with src/data's streaming PreferenceLoader: its position travels in checkpoints and a resumed run matches", async () => {
  const jsonl = await jsonlFixture();
  const full = makeRun(jsonl, mkdtempSync(join(tmpdir(), "dpo-loader-")));
  const a = await full.trainer.run();
  full.dispose();
  const losses = a.history.map((h) => h.metrics.loss);
  assert.equal(losses.length, 5, "5 steps over 3 batches per epoch: crosses an epoch boundary");
  assert.ok(losses.every(Number.isFinite));

  const out = mkdtempSync(join(tmpdir(), "dpo-loader-"));
  const first = makeRun(jsonl, out, 2);
  await first.trainer.run();
  first.dispose();
  const ck = loadCheckpoint(listCheckpoints(out).pop()![1]);
  assert.deepEqual(ck.state.data, { seed: 4, epoch: 0, position: 4, rank: 0, worldSize: 1 }, "the loader's own state is saved");
  const second = makeRun(jsonl, out);
  const b = await second.trainer.run();
  second.dispose();
  assert.deepEqual(b.history.map((h) => h.metrics.loss), losses.slice(2));
});
