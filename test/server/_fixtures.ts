// Test fixtures for the web app: a store of pairs with tiny PNGs, an eval folder, a run folder.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { PreferenceStore } from "../../src/data/store.js";

const COLORS: [number, number, number][] = [
  [231, 76, 60], [46, 204, 113], [52, 152, 219], [241, 196, 15], [155, 89, 182], [26, 188, 156],
  [230, 126, 34], [236, 240, 241], [52, 73, 94], [192, 57, 43], [39, 174, 96], [41, 128, 185],
];

/** A 32x32 PNG: a coloured disc on white, its colour and radius picked by `i`. */
export async function tinyPng(i: number, size = 32): Promise<Uint8Array> {
  const [r, g, b] = COLORS[i % COLORS.length]!;
  const raw = Buffer.alloc(size * size * 3, 255);
  const rad = size * (0.22 + 0.05 * (i % 4));
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const dx = x - size / 2 + 0.5;
      const dy = y - size / 2 + 0.5;
      if (dx * dx + dy * dy <= rad * rad) {
        const o = (y * size + x) * 3;
        raw[o] = r;
        raw[o + 1] = g;
        raw[o + 2] = b;
      }
    }
  }
  const png = await sharp(raw, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}

export const PROMPTS = [
  "a smiling face with heart eyes", "a red apple", "a rocket ship", "a cat face", "a slice of pizza", "a blue heart",
  "a sun behind a cloud", "a birthday cake", "a green tree", "a soccer ball", "a crescent moon", "a yellow star",
  "a pine tree in snow", "a cup of coffee",
];

/** A store at `file` with `n` pairs (one prompt each, two images per prompt). Returns the pair ids. */
export async function makeStore(file: string, n: number): Promise<{ store: PreferenceStore; pairs: number[] }> {
  const store = new PreferenceStore(file);
  const pairs: number[] = [];
  for (let i = 0; i < n; i++) {
    const prompt = PROMPTS[i % PROMPTS.length]! + (i >= PROMPTS.length ? ` #${i}` : "");
    const a = store.addImage({ prompt, data: await tinyPng(2 * i), format: "png", width: 32, height: 32, model: "m0", seed: i });
    const b = store.addImage({ prompt, data: await tinyPng(2 * i + 1), format: "png", width: 32, height: 32, model: "m0", seed: 1000 + i });
    pairs.push(store.addPair(a, b));
  }
  return { store, pairs };
}

/** An evaluation folder in the eval contract: eval.json, images/{base,tuned}/<i>.png, report.html. */
export async function makeEvalDir(dir: string, n = 4): Promise<void> {
  mkdirSync(join(dir, "images", "base"), { recursive: true });
  mkdirSync(join(dir, "images", "tuned"), { recursive: true });
  const samples = [];
  for (let i = 0; i < n; i++) {
    writeFileSync(join(dir, "images", "base", `${i}.png`), await tinyPng(i));
    writeFileSync(join(dir, "images", "tuned", `${i}.png`), await tinyPng(i + 5));
    samples.push({
      prompt: PROMPTS[i % 3]!,
      seed: Math.floor(i / 3),
      category: i % 2 === 0 ? "Smileys & Emotion" : "Food & Drink",
      base: `images/base/${i}.png`,
      tuned: `images/tuned/${i}.png`,
      scores: { classifier: { base: 0.2 + 0.1 * i, tuned: 0.5 + 0.05 * i }, clip: { base: 0.3, tuned: 0.25 + 0.02 * i } },
    });
  }
  // the shape src/eval/evaluate.ts writes (EvalSummary), abridged
  const wr = (rate: number, wins: number, losses: number, ties: number) => ({ rate, interval: [rate - 0.2, Math.min(1, rate + 0.15)], intervalMethod: "bootstrap-prompts", wins, losses, ties, n: wins + losses + ties, prompts: 3, byCategory: {} });
  const summary = {
    winRate: { classifier: wr(1, n, 0, 0), clip: wr(0.375, 1, 3, 0) },
    ties: { classifier: 0, clip: 0 },
    implicitAccuracy: { accuracy: 0.625, interval: [0.31, 0.86], intervalMethod: "wilson", pairs: 8, right: 5, ties: 0, draws: 4, beta: 5000, source: "prefs.db" },
    diversity: { base: 0.21, tuned: 0.17, tunedToBase: 0.09, feature: "classifier features", perPrompt: [] },
    bestOfN: null,
    config: { base: "models/emoji-base", tuned: "runs/dpo/final", sampler: "ddim", steps: 20, guidance: 3, seeds: [0, 1], promptCount: 3 },
  };
  writeFileSync(join(dir, "eval.json"), JSON.stringify({ summary, samples }, null, 2));
  writeFileSync(
    join(dir, "report.html"),
    `<!doctype html><html><body><h1>Report</h1><img src="images/base/0.png"><img src='images/tuned/1.png'><img src="../../etc/passwd"><script>document.title = "ran"</script></body></html>`,
  );
}

/** A metrics.jsonl step record as jsonlMetricsLog writes it. */
export function stepRecord(step: number): Record<string, unknown> {
  const t = step / 50;
  return {
    type: "step",
    step,
    time: Date.now(),
    loss: Math.LN2 - 0.25 * (1 - Math.exp(-t)) + 0.02 * Math.sin(step),
    implicitAcc: 0.5 + 0.35 * (1 - Math.exp(-t)),
    policyMse: 0.12 - 0.01 * (1 - Math.exp(-t)),
    referenceMse: null,
    margin: -0.002 * (1 - Math.exp(-t)),
    gradNorm: 0.8 + 0.1 * Math.cos(step / 3),
    lr: 1e-5 * Math.min(1, step / 20),
    pairsPerSec: 3.2,
    skippedSteps: 0,
  };
}

/** A run folder with `steps` logged steps, validation grids at 0 and 50, one checkpoint. */
export async function makeRunDir(dir: string, steps = 60): Promise<void> {
  mkdirSync(join(dir, "validation"), { recursive: true });
  mkdirSync(join(dir, "checkpoints", "step-000050"), { recursive: true });
  writeFileSync(join(dir, "checkpoints", "step-000050", "trainer_state.json"), "{}");
  writeFileSync(join(dir, "checkpoints", "step-000050", "config.json"), JSON.stringify({ method: "dpo", beta: 5000, learningRate: 1e-5, maxSteps: 200, batchSize: 4 }));
  for (const step of [0, 50]) {
    const tiles = await Promise.all([0, 1, 2, 3].map((i) => tinyPng(i + step)));
    const grid = await sharp({ create: { width: 133, height: 34, channels: 3, background: "#ffffff" } })
      .composite(tiles.map((t, i) => ({ input: Buffer.from(t), left: 1 + i * 33, top: 1 })))
      .png()
      .toBuffer();
    writeFileSync(join(dir, "validation", `step-${String(step).padStart(6, "0")}.png`), grid);
  }
  const lines = [];
  for (let s = 1; s <= steps; s++) {
    lines.push(JSON.stringify(stepRecord(s)));
    if (s === 50) lines.push(JSON.stringify({ type: "checkpoint", step: 50, path: join(dir, "checkpoints", "step-000050"), time: Date.now() }));
  }
  writeFileSync(join(dir, "metrics.jsonl"), lines.join("\n") + "\n");
}
