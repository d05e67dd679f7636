// train/run.ts buildTrainingRun is the one set-up (freezing, LoRA injection with the run's seed,
// encoders, loader, final save) behind both `diffusion-dpo train` and the demo's train stage: the
// same settings give the same per-step losses through both. Both paths run the same ops in the
// same order on one thread, so the losses agree to the last bit (asserted with a 1e-12 relative
// margin; measured difference 0).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { train } from "../../src/cli/commands/train.js";
import { PreferenceStore } from "../../src/data/store.js";
import { resolveSettings } from "../../src/demo/settings.js";
import { demoTrainConfig, trainStage } from "../../src/demo/stage-train.js";
import { demoPaths } from "../../src/demo/types.js";
import { tinyModelFolder } from "../cli/train-fixture.js";

async function png(value: number, i: number): Promise<Uint8Array> {
  const px = new Uint8Array(8 * 8 * 3).map((_, k) => (value + 7 * (k % 5) + 3 * i) % 256);
  return new Uint8Array(await sharp(px, { raw: { width: 8, height: 8, channels: 3 } }).png().toBuffer());
}

function losses(metricsJsonl: string): number[] {
  return readFileSync(metricsJsonl, "utf8").split("\n").filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as { step?: number; loss?: number })
    .filter((r) => typeof r.step === "number" && typeof r.loss === "number")
    .map((r) => r.loss!);
}

test("the CLI train command and the demo's train stage give the same per-step losses", async () => {
  const root = mkdtempSync(join(tmpdir(), "run-builder-"));
  const model = tinyModelFolder(join(root, "model"));
  const demoOut = join(root, "demo");
  const paths = demoPaths(demoOut);
  // 6 AI-labelled pairs: the brighter image wins
  const store = new PreferenceStore(paths.pairs);
  for (let i = 0; i < 6; i++) {
    const a = store.addImage({ prompt: `pair ${i}`, data: await png(200, i), format: "png" });
    const b = store.addImage({ prompt: `pair ${i}`, data: await png(50, i), format: "png" });
    store.setAiLabel(store.addPair(a, b), "brightness", 1, 0);
  }
  store.close();
  const settings = resolveSettings({ model, steps: 4, batch: 2, lr: 1e-3, warmup: 0, checkpointEvery: 2, seed: 3, promptDropout: 0.5 });

  const demo = await trainStage(settings, paths, () => {});
  assert.equal(demo.steps, 4);

  // the same settings as a config file for `diffusion-dpo train`, into another run folder
  const cliOut = join(root, "cli");
  const config = demoTrainConfig(settings, { train: cliOut, pairs: paths.pairs }, "epsilon", false);
  const configFile = join(root, "train.json");
  writeFileSync(configFile, JSON.stringify(config));
  const cli = await train({ config: configFile, nproc: "1" });
  assert.equal(cli?.step, 4);

  const a = losses(join(paths.train, "metrics.jsonl"));
  const b = losses(join(cliOut, "metrics.jsonl"));
  assert.equal(a.length, 4);
  assert.equal(b.length, 4);
  for (let i = 0; i < 4; i++) {
    assert.ok(Number.isFinite(a[i]!), `demo step ${i + 1} loss ${a[i]}`);
    assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-12 * Math.abs(a[i]!), `step ${i + 1}: demo ${a[i]} vs cli ${b[i]}`);
  }
  // and training moved: the loss is not the same at every step
  assert.ok(new Set(a).size > 1, `losses ${a.join(", ")}`);
});
