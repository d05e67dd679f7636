// `diffusion-dpo pretrain` in process on a folder of four 8×8 captioned images (a few steps).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { cliRunner } from "../cli/_capture.js";
import pretrainCommand from "../../src/cli/commands/pretrain.js";
import { loadModelFolder, disposeTextToImageModel } from "../../src/models/pipeline.js";


const cli = cliRunner({ pretrain: pretrainCommand });

const dir = mkdtempSync(join(tmpdir(), "dpo-cli-pretrain-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const data = join(dir, "data");

test.before(async () => {
  mkdirSync(data);
  const colours: [string, [number, number, number]][] = [["red square", [220, 30, 30]], ["green square", [30, 200, 30]], ["blue square", [30, 30, 220]], ["yellow square", [240, 220, 20]]];
  for (const [i, [caption, rgb]] of colours.entries()) {
    const px = Buffer.alloc(8 * 8 * 3);
    for (let p = 0; p < 64; p++) px.set(rgb, p * 3);
    await sharp(px, { raw: { width: 8, height: 8, channels: 3 } }).png().toFile(join(data, `img${i}.png`));
    writeFileSync(join(data, `img${i}.txt`), `${caption}\n`);
  }
});

test("pretrain on a captioned folder writes checkpoints and a loadable model; --resume continues", async () => {
  const out = join(dir, "run");
  const r = await cli(["pretrain", "--data", data, "--size", "8", "--steps", "2", "--batch", "2", "--warmup", "0", "--out", out, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const s = r.json();
  assert.equal(s.steps, 2);
  assert.equal(s.images, 4);
  assert.ok(Number.isFinite(s.loss) && s.loss > 0);
  assert.ok(existsSync(join(out, "checkpoints", "step-000002", "ema.safetensors")));
  const m = loadModelFolder(join(out, "model"));
  assert.equal(m.unet.config.sampleSize, 8);
  assert.equal(m.scheduler.predictionType, "v_prediction");
  // the tokenizer covers the captions: no unknown-token fallback for "square"
  assert.ok(m.tokenizer.encode("blue square").length >= 4);
  disposeTextToImageModel(m);
  assert.match(r.stderr, /pretrain .* 2\/2/);
  const r2 = await cli(["pretrain", "--data", data, "--size", "8", "--steps", "3", "--batch", "2", "--warmup", "0", "--out", out, "--resume", "--json"]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(r2.json().steps, 3);
  assert.match(r2.stderr, /resuming from .*step-000002 \(step 2\)/);
  const training = JSON.parse(readFileSync(join(out, "model", "training.json"), "utf8"));
  assert.deepEqual(training.losses.map((l: [number, number]) => l[0]), [1, 2, 3]);
});

test("pretrain --config: file values apply, flags win, unknown keys are errors", async () => {
  const cfg = join(dir, "cfg.yaml");
  writeFileSync(cfg, "steps: 1\nbatch: 3\nsize: 8\nwarmup: 0\n");
  const r = await cli(["pretrain", "--data", data, "--config", cfg, "--batch", "2", "--out", join(dir, "run-cfg"), "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.json().steps, 1);
  assert.equal(r.json().batch, 2);
  writeFileSync(cfg, "stepz: 1\n");
  const bad = await cli(["pretrain", "--data", data, "--config", cfg]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--config .*cfg\.yaml.*stepz.*Allowed keys/);
});

test("pretrain names a missing caption file and a bad flag value", async () => {
  const d2 = join(dir, "nocap");
  mkdirSync(d2);
  await sharp(Buffer.alloc(8 * 8 * 3, 255), { raw: { width: 8, height: 8, channels: 3 } }).png().toFile(join(d2, "lonely.png"));
  const r = await cli(["pretrain", "--data", d2, "--size", "8", "--steps", "1"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /lonely\.png has no caption file lonely\.txt/);
  const r2 = await cli(["pretrain", "--data", data, "--size", "6"]);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /--size must be a multiple of 4, got "6"/);
});
