// Fixtures for the `train` command tests: a tiny pixel-space diffusers folder (the shipped
// model's architecture at sample_size 8, random weights) and JSONL preference pairs of 8×8 PNGs
// where the chosen image is always the brighter one.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { setInitSeed } from "../../src/nn/index.js";
import { TINY_UNET_CONFIG } from "../../src/models/unet/index.js";
import { createTextToImageModel, disposeTextToImageModel, saveModelFolder } from "../../src/models/pipeline.js";

export function tinyModelFolder(dir: string): string {
  setInitSeed(0);
  const m = createTextToImageModel({ unet: { ...TINY_UNET_CONFIG, sampleSize: 8 } });
  saveModelFolder(dir, m);
  disposeTextToImageModel(m);
  return dir;
}

/** `n` pairs in dir/pairs.jsonl: chosen ≈ grey 200, rejected ≈ grey 50, a small pattern on top. */
export async function brightJsonl(dir: string, n = 6, size = 8): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    for (const [name, v] of [[`c${i}.png`, 200], [`r${i}.png`, 50]] as const) {
      const px = new Uint8Array(size * size * 3).map((_, k) => (v + 7 * (k % 5) + 3 * i) % 256);
      await sharp(px, { raw: { width: size, height: size, channels: 3 } }).png().toFile(join(dir, name));
    }
    lines.push(JSON.stringify({ prompt: `pair ${i}`, chosen: `c${i}.png`, rejected: `r${i}.png` }));
  }
  const path = join(dir, "pairs.jsonl");
  writeFileSync(path, lines.length > 0 ? `${lines.join("\n")}\n` : "");
  return path;
}
