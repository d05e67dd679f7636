/**
 * JSON lines, one pair per line. Accepted fields:
 *
 *   {"prompt": "a cat", "chosen": "img/a.png", "rejected": "img/b.png"}
 *   {"caption": "a cat", "image_0": "img/a.png", "image_1": "img/b.png", "label_0": 0, "label_1": 1}
 *
 * `prompt` or `caption`; images as paths (relative to the JSONL file's directory) or file://
 * URLs (jpg_0/jpg_1 are accepted as names for image_0/image_1); labels in Pick-a-Pic's
 * (label_0, label_1) form (ties 0.5/0.5 dropped by default) or the chosen/rejected form.
 * An optional `id` names the pair (default: "<file>:<line>"). Rows are 0-based line numbers
 * (blank lines count, so row + 1 is the editor's line number).
 */
import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { badRow, checkPairImages, parseLabels } from "./common.js";
import type { PairUnit, PreferenceSource, ReaderOptions, RowResult } from "./types.js";

export class JsonlSource implements PreferenceSource {
  readonly name: string;
  private readonly lines: string[];
  private readonly opts: ReaderOptions;

  constructor(path: string, opts: ReaderOptions = {}) {
    this.name = path;
    this.opts = opts;
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (e) {
      throw new Error(`${path}: cannot read JSONL file (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
    this.lines = text.split("\n");
    if (this.lines.length > 0 && this.lines[this.lines.length - 1]!.trim() === "") this.lines.pop();
  }

  async units(): Promise<PairUnit[]> {
    return [{ key: this.name, rows: this.lines.length }];
  }

  private imagePath(v: unknown, row: number, field: string): { path: string } | RowResult {
    if (typeof v !== "string" || v === "") {
      return badRow("wrong-type", this.name, row, field, `expected an image path, got ${v === undefined ? "nothing" : JSON.stringify(v)}`);
    }
    if (/^[a-z]+:\/\//i.test(v)) {
      if (v.startsWith("file://")) return { path: fileURLToPath(v) };
      return badRow("wrong-type", this.name, row, field, `'${v}' is a remote URL; only local files are read, download the images first`);
    }
    return { path: isAbsolute(v) ? v : resolve(dirname(this.name), v) };
  }

  async readUnit(index: number): Promise<RowResult[]> {
    if (index !== 0) throw new Error(`${this.name}: a JSONL data set has one unit, asked for ${index}`);
    const out: RowResult[] = [];
    for (let row = 0; row < this.lines.length; row++) {
      const r = await this.convert(this.lines[row]!, row);
      if (r) out.push(r);
    }
    return out;
  }

  private async convert(line: string, row: number): Promise<RowResult | null> {
    if (line.trim() === "") return null;
    let o: Record<string, unknown>;
    try {
      const v: unknown = JSON.parse(line);
      if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
      o = v as Record<string, unknown>;
    } catch (e) {
      return badRow("wrong-type", this.name, row, null, `line ${row + 1} is not a JSON object (${(e as Error).message})`);
    }
    const promptField = "prompt" in o ? "prompt" : "caption";
    const prompt = o[promptField];
    if (prompt === undefined) return badRow("missing-column", this.name, row, "prompt", "no 'prompt' (or 'caption') field");
    if (typeof prompt !== "string") return badRow("wrong-type", this.name, row, promptField, `expected a string, got ${prompt === null ? "null" : typeof prompt}`);
    if (prompt.trim() === "") return badRow("empty-caption", this.name, row, promptField, "prompt is empty");

    let chosenField: string;
    let rejectedField: string;
    let tie = false;
    let swapped = false;
    if ("chosen" in o || "rejected" in o) {
      chosenField = "chosen";
      rejectedField = "rejected";
    } else {
      const f0 = "image_0" in o ? "image_0" : "jpg_0" in o ? "jpg_0" : null;
      const f1 = "image_1" in o ? "image_1" : "jpg_1" in o ? "jpg_1" : null;
      if (!f0 || !f1) return badRow("missing-column", this.name, row, f0 ? "image_1" : "image_0", "need either chosen/rejected or image_0/image_1 with label_0/label_1");
      if (!("label_0" in o) || !("label_1" in o)) return badRow("missing-column", this.name, row, "label_0" in o ? "label_1" : "label_0", "image_0/image_1 need label_0 and label_1");
      const lab = parseLabels(o.label_0, o.label_1);
      if ("error" in lab) return badRow(lab.reason, this.name, row, lab.field, lab.error);
      if (lab.first === null) {
        if (this.opts.dropTies ?? true) return { kind: "tie" };
        tie = true;
      }
      swapped = lab.first === false;
      chosenField = swapped ? f1 : f0;
      rejectedField = swapped ? f0 : f1;
    }
    const c = this.imagePath(o[chosenField], row, chosenField);
    if ("kind" in c) return c;
    const r = this.imagePath(o[rejectedField], row, rejectedField);
    if ("kind" in r) return r;
    if (this.opts.checkImages) {
      const bad = await checkPairImages(this.name, row, { img: c.path, field: chosenField }, { img: r.path, field: rejectedField });
      if (bad) return bad;
    }
    const meta: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) if (!["prompt", "caption", "chosen", "rejected", "image_0", "image_1", "jpg_0", "jpg_1", "id"].includes(k)) meta[k] = v;
    return {
      kind: "pair",
      swapped,
      pair: {
        id: typeof o.id === "string" || typeof o.id === "number" ? String(o.id) : `${this.name}:${row + 1}`,
        prompt,
        chosen: c.path,
        rejected: r.path,
        fields: { chosen: chosenField, rejected: rejectedField },
        tie,
        source: { file: this.name, row },
        meta,
      },
    };
  }
}
