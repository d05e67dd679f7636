// `diffusion-dpo export-checkpoint`: a diffusers model folder → one original-SD single-file
// .safetensors (model.diffusion_model / first_stage_model / cond_stage_model or conditioner
// keys) that AUTOMATIC1111 / Forge, ComfyUI and InvokeAI load from their checkpoint folders.
import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../errors.js";

export default defineCommand({
  meta: { name: "export-checkpoint", description: "Write a diffusers model folder as one original-SD single-file checkpoint (A1111, ComfyUI)." },
  args: {
    model: { type: "string", description: "Model folder (diffusers layout, with a VAE)", required: true },
    out: { type: "string", description: "Output .safetensors file", required: true },
    family: { type: "string", description: "sd1 | sd2 | sdxl (default: detected — a second text encoder is SDXL, an OpenCLIP text encoder SD2)", default: "" },
    dtype: { type: "string", description: "keep | f16 | bf16 | f32: floating-point tensors converted to this type (keep: as stored)", default: "keep" },
    json: { type: "boolean", description: "Print one JSON object with the summary", default: false },
  },
  async run({ args }) {
    const { SD_FAMILIES, exportSingleFileCheckpoint } = await import("../../models/convert/index.js");
    if (!existsSync(join(args.model, "model_index.json"))) throw new UsageError(`--model ${args.model}: not a diffusers model folder (no model_index.json)`);
    if (!args.out.endsWith(".safetensors")) throw new UsageError(`--out ${args.out}: name a .safetensors file`);
    if (args.family !== "" && !SD_FAMILIES.includes(args.family as never)) throw new UsageError(`--family must be one of ${SD_FAMILIES.join(", ")}, got "${args.family}"`);
    if (!["keep", "f16", "bf16", "f32"].includes(args.dtype)) throw new UsageError(`--dtype must be keep, f16, bf16 or f32, got "${args.dtype}"`);
    try {
      const r = exportSingleFileCheckpoint(args.model, args.out, {
        family: args.family === "" ? undefined : (args.family as "sd1" | "sd2" | "sdxl"),
        dtype: args.dtype as "keep" | "f16" | "bf16" | "f32",
      });
      if (args.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        process.stdout.write(
          `wrote ${r.out} (${r.family}: ${Object.entries(r.counts).map(([c, n]) => `${n} ${c}`).join(", ")} tensors` +
            `${r.markers.length ? `; markers ${r.markers.join(", ")}` : ""})\n`,
        );
      }
    } catch (err) {
      if (["CheckpointError", "NameTableError"].includes((err as Error).name)) throw new UsageError((err as Error).message);
      throw err;
    }
  },
});
