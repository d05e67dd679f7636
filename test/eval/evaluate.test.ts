import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { loadModelPair, resolveTuned } from "../../src/eval/models.js";
import { evaluate, type EvalJson } from "../../src/eval/evaluate.js";
import { readRunLog } from "../../src/eval/runLog.js";
import { generate } from "../../src/sample/generate.js";
import { bestOfN, bestOfNSizes } from "../../src/eval/bestOfN.js";
import { diversity, pixelFeatures, rmsDistance } from "../../src/eval/diversity.js";
import { brightPairsJsonl, brightness, constant, makeTinyFolders } from "./_fixtures.js";

const root = mkdtempSync(join(tmpdir(), "dpo-eval-"));
const folders = makeTinyFolders(root);
const gen = (m: Parameters<typeof generate>[0]["model"]) => generate({ model: m, prompts: ["a red ball", "a cat"], seeds: [3, 4], steps: 2, guidance: 1 });

test("tuned model specs: full folder, trainer run (UNet only), LoRA folder and LoRA file", () => {
  assert.equal(resolveTuned(folders.full).kind, "full");
  assert.deepEqual(resolveTuned(folders.unetRun), { kind: "unet", path: join(folders.unetRun, "final", "unet", "diffusion_pytorch_model.safetensors") });
  assert.equal(resolveTuned(join(root, "run-lora")).kind, "lora");
  assert.equal(resolveTuned(folders.loraFile).kind, "lora");
  assert.throws(() => resolveTuned(join(root, "nope")), /does not exist/);

  const full = loadModelPair(folders.base, folders.full);
  const baseImgs = full.use("base", gen);
  const fullImgs = full.use("tuned", gen);
  full.dispose();
  assert.notDeepEqual(fullImgs[0]!.data, baseImgs[0]!.data);

  const unet = loadModelPair(folders.base, folders.unetRun);
  assert.equal(unet.kind, "unet");
  assert.deepEqual(unet.use("tuned", gen).map((i) => i.data), fullImgs.map((i) => i.data), "UNet weights on the base folder = the full tuned folder");
  unet.dispose();

  for (const spec of [join(root, "run-lora"), folders.loraFile]) {
    const lora = loadModelPair(folders.base, spec);
    assert.equal(lora.kind, "lora");
    assert.deepEqual(lora.source.lora, { rank: 2, alpha: 4, targets: ["to_q", "to_k", "to_v", "to_out.0"] }, `α from ${spec}`);
    assert.deepEqual(lora.use("base", gen).map((i) => i.data), baseImgs.map((i) => i.data), "adapters off = the base model");
    const tuned = lora.use("tuned", gen);
    assert.notDeepEqual(tuned[0]!.data, baseImgs[0]!.data, "adapters on change the samples");
    lora.dispose();
  }
});

test("evaluate: win rates with ties, diversity, best-of-n, implicit accuracy, and the output folder contract", async () => {
  const out = join(root, "eval-out");
  const pairs = await brightPairsJsonl(join(root, "pairs"), 4);
  const models = loadModelPair(folders.base, folders.unetRun);
  const events: string[] = [];
  const prompts = [{ prompt: "a red ball", category: "Artifacts" }, { prompt: "a cat", category: "Animals" }, { prompt: "a dog", category: "Animals" }];
  const res = await evaluate({
    models, prompts, promptSource: "test-prompts.tsv", seeds: [0, 1], sampler: "ddim", steps: 2, guidance: 1,
    rewards: [brightness, constant], tieMargin: 1e-6, bootstrap: 500, bestOfN: 2,
    pairs: { spec: pairs, limit: 3, batchSize: 2 }, implicitDraws: 2,
    run: { path: folders.unetRun, log: readRunLog(folders.unetRun) }, outDir: out,
    onEvent: (e) => events.push(e.type === "phase" ? e.phase : e.type),
  });
  models.dispose();
  assert.deepEqual([...new Set(events.filter((e) => e !== "progress"))], ["sample-base", "sample-tuned", "score", "best-of-n", "implicit", "write", "written"]);

  const json = JSON.parse(readFileSync(join(out, "eval.json"), "utf8")) as EvalJson;
  assert.deepEqual(Object.keys(json), ["summary", "samples"]);
  assert.deepEqual(Object.keys(json.summary).sort(), ["bestOfN", "config", "diversity", "implicitAccuracy", "meanScores", "ties", "winRate"]);
  assert.equal(json.samples.length, 6);
  json.samples.forEach((s, i) => {
    assert.equal(s.base, `images/base/${i}.png`);
    assert.equal(s.tuned, `images/tuned/${i}.png`);
    assert.ok(existsSync(join(out, s.base)) && existsSync(join(out, s.tuned)));
    assert.deepEqual(Object.keys(s.scores), ["brightness", "constant"]);
  });
  assert.deepEqual(json.samples.map((s) => [s.prompt, s.seed, s.category]), [
    ["a red ball", 0, "Artifacts"], ["a red ball", 1, "Artifacts"], ["a cat", 0, "Animals"], ["a cat", 1, "Animals"], ["a dog", 0, "Animals"], ["a dog", 1, "Animals"],
  ]);
  // the saved PNG is the image that was scored
  const png = await sharp(join(out, json.samples[2]!.tuned)).raw().toBuffer();
  const mean = png.reduce((a, b) => a + b, 0) / (png.length * 255);
  assert.ok(Math.abs(mean - json.samples[2]!.scores.brightness!.tuned) < 1e-9);

  // win rates recomputed by hand from the per-sample scores
  const b = json.summary.winRate.brightness!;
  const deltas = json.samples.map((s) => s.scores.brightness!.tuned - s.scores.brightness!.base);
  const wins = deltas.filter((d) => d > 1e-6).length;
  const losses = deltas.filter((d) => d < -1e-6).length;
  assert.equal(b.wins, wins);
  assert.equal(b.losses, losses);
  assert.equal(b.rate, (wins + 0.5 * (6 - wins - losses)) / 6);
  assert.ok(wins >= 5, `the ε − 0.3 model is brighter: ${deltas.join(", ")}`);
  assert.deepEqual(Object.keys(b.byCategory), ["Artifacts", "Animals"]);
  assert.equal(b.byCategory.Animals!.n, 4);
  const c = json.summary.winRate.constant!;
  assert.deepEqual([c.wins, c.ties, c.losses, c.rate], [0, 6, 0, 0.5], "a constant reward ties everything");
  assert.equal(c.decisive, null, "NaN written as null");
  assert.deepEqual(json.summary.ties, { brightness: 6 - wins - losses, constant: 6 });

  // diversity (2 seeds per prompt) from the images on disk
  const d = json.summary.diversity!;
  assert.equal(d.perPrompt.length, 3);
  const feat = async (p: string) => {
    const { data, info } = await sharp(join(out, p)).raw().toBuffer({ resolveWithObject: true });
    return pixelFeatures({ width: info.width, height: info.height, data: new Uint8Array(data) });
  };
  const [b0, b1] = [await feat(json.samples[0]!.base), await feat(json.samples[1]!.base)];
  assert.ok(Math.abs(d.perPrompt[0]!.base - rmsDistance(b0, b1)) < 1e-6);
  assert.ok(d.tunedToBase > 0);

  // best-of-n: n = 1, 2 per reward; the constant reward never wins
  const bon = json.summary.bestOfN!;
  assert.deepEqual(bon.brightness!.points.map((p) => p.n), [1, 2]);
  assert.deepEqual(bon.constant!.points.map((p) => p.winRate.rate), [0.5, 0.5]);

  // implicit accuracy on 3 of the 4 pairs, 2 draws each
  const ia = json.summary.implicitAccuracy!;
  assert.equal(ia.pairs, 3);
  assert.equal(ia.draws, 2);
  assert.ok(ia.accuracy >= 0 && ia.accuracy <= 1);

  // config and report
  assert.equal(json.summary.config.tunedKind, "unet");
  assert.deepEqual(json.summary.config.seeds, [0, 1]);
  assert.deepEqual(json.summary.config.training, { finetune: "full", beta: 5000 });
  const html = readFileSync(join(out, "report.html"), "utf8");
  assert.ok(!/https?:\/\//.test(html.replace(/http:\/\/www\.w3\.org\/2000\/svg/g, "")), "no network references");
  assert.equal((html.match(/<svg class="curve"/g) ?? []).length, 4 + 2, "4 training curves + 2 best-of-n charts");
  assert.equal((html.match(/data:image\/png;base64,/g) ?? []).length, 12);
  assert.deepEqual(res.samples, json.samples);
});

test("best-of-n and diversity arithmetic on hand-made scores and images", () => {
  assert.deepEqual(bestOfNSizes(8), [1, 2, 4, 8]);
  assert.deepEqual(bestOfNSizes(6), [1, 2, 4, 6]);
  // 4 prompts; reference 0.5; candidates: the best of the first n
  const refs = [0.5, 0.5, 0.5, 0.5];
  const cands = [[0.4, 0.6, 0.1, 0.1], [0.6, 0.2, 0.3, 0.3], [0.1, 0.2, 0.9, 0.3], [0.1, 0.2, 0.3, 0.4]];
  const r = bestOfN(refs, cands, 0.7, 4, { bootstrap: 200 });
  // n=1: wins at prompt 1 only → ¼; n=2: prompts 0,1 → ½; n=4: prompts 0,1,2 → ¾
  assert.deepEqual(r.points.map((p) => p.winRate.rate), [0.25, 0.5, 0.75]);
  assert.equal(r.matchN, 4);
  assert.equal(bestOfN(refs, cands, 0.9, 4).matchN, null);

  const img = (v: number[]) => ({ width: 2, height: 1, data: new Uint8Array(v) });
  const black = img([0, 0, 0, 0, 0, 0]);
  const white = img([255, 255, 255, 255, 255, 255]);
  const half = img([255, 255, 255, 0, 0, 0]);
  assert.equal(rmsDistance(pixelFeatures(black), pixelFeatures(white)), 1);
  assert.ok(Math.abs(rmsDistance(pixelFeatures(black), pixelFeatures(half)) - Math.SQRT1_2) < 1e-7);
  const d = diversity([{ prompt: "p", base: [black, white, half], tuned: [black, black, black] }]);
  // base pairs: (b,w) 1, (b,h) √½, (w,h) √½ → (1 + √2)/3; tuned collapsed → 0; tuned↔base: 0, 1, √½
  assert.ok(Math.abs(d.base - (1 + Math.SQRT2) / 3) < 1e-7);
  assert.equal(d.tuned, 0);
  assert.ok(Math.abs(d.tunedToBase - (1 + Math.SQRT1_2) / 3) < 1e-7);
  // 16×16 area average of a 32×32 image: 2×2 blocks
  const big = { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3).map((_, i) => (Math.floor(i / 3) % 2 === 0 ? 255 : 0)) };
  const f = pixelFeatures(big);
  assert.equal(f.length, 16 * 16 * 3);
  assert.ok(f.every((v) => Math.abs(v - 0.5) < 1e-7), "alternating columns average to ½");
});
