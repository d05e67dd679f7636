// `diffusion-dpo merge`: folds a LoRA into its base model (W ← W + scale · (alpha/r) · B·A for
// every adapted layer: UNet, and text encoders when the file has adapters for them) and writes
// a complete diffusers folder (all components, model_index.json); --single-file also writes the
// merged model as one original-SD checkpoint for AUTOMATIC1111 / ComfyUI.
import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../errors.js";

export default defineCommand({
  meta: { name: "merge", description: "Merge a LoRA into its base model: a full diffusers folder (and optionally a single-file checkpoint)." },
  args: {
    model: { type: "string", description: "Base model: a diffusers folder", required: true },
    lora: { type: "string", description: "LoRA: a .safetensors file (diffusers, peft or kohya keys), a peft folder or a training run's final/ folder", required: true },
    scale: { type: "string", description: "Strength multiplier on every adapter (A1111's <lora:name:S>)", default: "1" },
    out: { type: "string", description: "Output diffusers folder (replaced if it is a model folder)", required: true },
    singleFile: { type: "string", description: "Also write the merged model as an original-SD single-file .safetensors here (latent models only)", default: "" },
    device: { type: "string", description: "cpu or cuda[:N]", default: "cpu" },
    json: { type: "boolean", description: "Print one JSON object with the summary", default: false },
  },
  async run({ args }) {
    const scale = Number(args.scale);
    if (!Number.isFinite(scale)) throw new UsageError(`--scale must be a number, got "${args.scale}"`);
    if (!existsSync(join(args.model, "model_index.json"))) throw new UsageError(`--model ${args.model}: not a diffusers model folder (no model_index.json)`);
    const { mergeLoraIntoFolder } = await import("../../models/convert/merge.js");
    try {
      const r = mergeLoraIntoFolder({ model: args.model, lora: args.lora, scale, out: args.out, singleFile: args.singleFile || undefined, device: args.device });
      if (args.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        process.stdout.write(
          `merged ${Object.entries(r.merged).map(([c, n]) => `${n} ${c} layers`).join(", ")} (${r.format} LoRA, scale ${scale}) into ${r.out}` +
            `${r.singleFile ? `; single file ${r.singleFile}` : ""}\n`,
        );
      }
    } catch (err) {
      if (["LoraFormatError", "NameTableError", "CheckpointError"].includes((err as Error).name)) throw new UsageError((err as Error).message);
      throw err;
    }
  },
});
