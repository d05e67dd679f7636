// `diffusion-dpo import-checkpoint`: an original-SD single-file checkpoint → a diffusers folder.
// A single file carries no configs, tokenizer or scheduler, so they come from --config-from, a
// diffusers folder of the same architecture (e.g. the base model the checkpoint was tuned from),
// or for SD1.x files from SD1.5's public configs; every tensor's name and shape is checked.
import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { UsageError } from "../errors.js";

export default defineCommand({
  meta: { name: "import-checkpoint", description: "Read an original-SD single-file checkpoint into a diffusers model folder (configs from a reference folder)." },
  args: {
    in: { type: "string", description: "Single-file .safetensors checkpoint (SD1.x, SD2.x or SDXL)", required: true },
    configFrom: { type: "string", description: "Diffusers folder of the same architecture whose configs, tokenizers and scheduler are copied (default: SD1.5's public configs, for SD1.x files of SD1.5's size; SD2.x / SDXL need it)", default: "" },
    out: { type: "string", description: "Output model folder (replaced if it is a model folder)", required: true },
    family: { type: "string", description: "sd1 | sd2 | sdxl (default: detected from the file's key prefixes)", default: "" },
    json: { type: "boolean", description: "Print one JSON object with the summary", default: false },
  },
  async run({ args }) {
    const { SD_FAMILIES, importSingleFileCheckpoint } = await import("../../models/convert/index.js");
    if (!existsSync(args.in)) throw new UsageError(`--in ${args.in}: no such file`);
    if (args.family !== "" && !SD_FAMILIES.includes(args.family as never)) throw new UsageError(`--family must be one of ${SD_FAMILIES.join(", ")}, got "${args.family}"`);
    try {
      const r = importSingleFileCheckpoint(args.in, args.out, {
        configFrom: args.configFrom === "" ? undefined : args.configFrom,
        family: args.family === "" ? undefined : (args.family as "sd1" | "sd2" | "sdxl"),
      });
      if (args.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        const skipped = r.skipped.length ? `; skipped ${r.skipped.length} key(s): ${[...new Set(r.skipped.map((s) => s.reason))].join("; ")}` : "";
        process.stdout.write(`wrote ${r.out} (${r.family}: ${Object.entries(r.counts).map(([c, n]) => `${n} ${c}`).join(", ")} tensors${skipped})\n`);
      }
    } catch (err) {
      if (["CheckpointError", "NameTableError"].includes((err as Error).name)) throw new UsageError((err as Error).message);
      throw err;
    }
  },
});
