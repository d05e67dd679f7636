// PNG output for generated images: single files, and a labelled grid (each image scaled up with
// nearest-neighbour, its caption drawn underneath as SVG text that sharp rasterises).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import sharp, { type OverlayOptions } from "sharp";
import type { RgbImage } from "./generate.js";

/** PNG bytes of an RGB image, optionally scaled up `scale`× with nearest-neighbour. */
export async function encodePng(image: RgbImage, scale = 1): Promise<Buffer> {
  let s = sharp(Buffer.from(image.data), { raw: { width: image.width, height: image.height, channels: 3 } });
  if (scale !== 1) s = s.resize(image.width * scale, image.height * scale, { kernel: "nearest" });
  return s.png().toBuffer();
}

/** Reads an image file (PNG, JPEG, WebP, …) as RGB, composited on white and resized to size×size. */
export async function readImage(path: string, size?: number): Promise<RgbImage> {
  let s = sharp(path).flatten({ background: "#ffffff" });
  if (size !== undefined) s = s.resize(size, size, { fit: "fill" });
  const { data, info } = await s.removeAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`${path}: expected RGB after decoding, got ${info.channels} channels`);
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!);
}

/** Greedy word wrap to at most `maxLines` lines of `width` characters (the last one cut with "…"). */
export function wrapLabel(text: string, width: number, maxLines: number): string[] {
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  const lines: string[] = [];
  let line = "";
  for (const w of words) {
    const next = line ? `${line} ${w}` : w;
    if (next.length <= width) line = next;
    else {
      if (line) lines.push(line);
      line = w.length > width ? `${w.slice(0, width - 1)}…` : w;
    }
  }
  if (line) lines.push(line);
  if (lines.length > maxLines) {
    const kept = lines.slice(0, maxLines);
    const last = kept[maxLines - 1]!;
    kept[maxLines - 1] = `${last.slice(0, Math.max(0, width - 1))}…`;
    return kept;
  }
  return lines;
}

export interface GridOptions {
  /** Columns (default ⌈√n⌉). */
  cols?: number;
  /** Upscaling of each image (default 4: 32 px → 128 px). */
  scale?: number;
  /** Lines of caption under each image (default 3). */
  labelLines?: number;
  fontSize?: number;
}

/** A labelled grid as PNG bytes: images in rows, each caption under its image. */
export async function makeGrid(images: RgbImage[], labels: string[], opts: GridOptions = {}): Promise<Buffer> {
  if (images.length === 0) throw new Error("makeGrid: no images");
  if (labels.length !== images.length) throw new Error(`makeGrid: ${labels.length} labels for ${images.length} images`);
  const scale = opts.scale ?? 4;
  const cols = opts.cols ?? Math.ceil(Math.sqrt(images.length));
  const rows = Math.ceil(images.length / cols);
  const font = opts.fontSize ?? 11;
  const lines = opts.labelLines ?? 3;
  const cellW = Math.max(...images.map((i) => i.width)) * scale;
  const imgH = Math.max(...images.map((i) => i.height)) * scale;
  const pad = 6;
  const labelH = Math.ceil(lines * font * 1.25) + 4;
  const cellH = imgH + labelH + pad;
  const W = cols * (cellW + pad) + pad;
  const H = rows * cellH + pad;
  const chars = Math.max(8, Math.floor(cellW / (font * 0.55)));
  const parts: OverlayOptions[] = [];
  const text: string[] = [];
  for (let i = 0; i < images.length; i++) {
    const x = pad + (i % cols) * (cellW + pad);
    const y = pad + Math.floor(i / cols) * cellH;
    parts.push({ input: await encodePng(images[i]!, scale), left: x, top: y });
    wrapLabel(labels[i]!, chars, lines).forEach((l, k) => {
      text.push(`<text x="${x}" y="${y + imgH + 2 + (k + 1) * font * 1.2}" font-family="DejaVu Sans, sans-serif" font-size="${font}" fill="#222">${escapeXml(l)}</text>`);
    });
  }
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">${text.join("")}</svg>`;
  parts.push({ input: Buffer.from(svg), left: 0, top: 0 });
  return sharp({ create: { width: W, height: H, channels: 3, background: "#ffffff" } }).composite(parts).png().toBuffer();
}

export interface WrittenSamples {
  files: string[];
  grid: string;
}

/** Writes <dir>/<index>-seed<seed>.png per image, grid.png and samples.json (prompt, seed, file). */
export async function writeSamples(dir: string, images: RgbImage[], prompts: string[], seeds: number[], grid: GridOptions = {}): Promise<WrittenSamples> {
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (let i = 0; i < images.length; i++) {
    const file = join(dir, `${String(i).padStart(3, "0")}-seed${seeds[i]}.png`);
    writeFileSync(file, await encodePng(images[i]!));
    files.push(file);
  }
  const gridPath = join(dir, "grid.png");
  writeFileSync(gridPath, await makeGrid(images, prompts.map((p, i) => `${p} (seed ${seeds[i]})`), grid));
  writeFileSync(join(dir, "samples.json"), JSON.stringify(images.map((_, i) => ({ prompt: prompts[i], seed: seeds[i], file: files[i] })), null, 1) + "\n");
  return { files, grid: gridPath };
}
