// `diffusion-dpo lora convert`: rewrites a LoRA file in another tool's format — diffusers
// (pytorch_lora_weights.safetensors), peft (adapter_model.safetensors + adapter_config.json) or
// kohya (lora_unet_… keys with the original-SD block names, for AUTOMATIC1111 / Forge / ComfyUI /
// InvokeAI). Weights and alphas are copied exactly; keys that are not LoRA tensors of a known
// layer stop the conversion and are all listed.
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";

const convert = defineCommand({
  meta: { name: "convert", description: "Convert a LoRA file between the diffusers, peft and kohya (A1111 / ComfyUI) formats." },
  args: {
    in: { type: "string", description: "LoRA to read: a .safetensors file (any of the three formats), a peft / diffusers folder or a training run folder (its final/)", required: true },
    to: { type: "string", description: "Output format: diffusers | peft | kohya", required: true },
    out: { type: "string", description: "Output: a .safetensors file (diffusers, kohya) or a folder (peft)", required: true },
    model: { type: "string", description: "Base model for the UNet block numbering of kohya names: a model folder (its unet/config.json), or sd1 | sd2 | sdxl (needed to write kohya or to read kohya files with input_blocks names)", default: "" },
    alpha: { type: "string", description: "alpha for a diffusers input without metadata (default: the rank, scale 1)", default: "" },
    json: { type: "boolean", description: "Print one JSON object with the summary", default: false },
  },
  async run({ args }) {
    const { LORA_FORMATS, assertAllMatched, layersMissingFromFolder, readLoraFile, unetLayoutFor, writeLoraFile } = await import("../../models/convert/index.js");
    const to = args.to as (typeof LORA_FORMATS)[number];
    if (!LORA_FORMATS.includes(to)) throw new UsageError(`--to must be one of ${LORA_FORMATS.join(", ")}, got "${args.to}"`);
    let alpha: number | undefined;
    if (args.alpha !== "") {
      alpha = Number(args.alpha);
      if (!(alpha > 0)) throw new UsageError(`--alpha must be a positive number, got "${args.alpha}"`);
    }
    const layoutOf = () => {
      try {
        return args.model === "" ? undefined : unetLayoutFor(args.model);
      } catch (err) {
        throw new UsageError(`--model ${args.model}: ${(err as Error).message}`);
      }
    };
    const unetLayout = layoutOf();
    const { detectFolderFamily } = await import("../../models/convert/index.js");
    // kohya text-encoder prefixes (lora_te_ vs lora_te1_/lora_te2_) follow the base model's family
    const twoTextEncoders = args.model === "" ? undefined
      : args.model === "sdxl" || (!["sd1", "sd2"].includes(args.model) && detectFolderFamily(args.model) === "sdxl");
    try {
      const file = readLoraFile(args.in, { unetLayout, alpha });
      assertAllMatched(file);
      if (args.model !== "" && !["sd1", "sd2", "sdxl"].includes(args.model)) {
        const missing = layersMissingFromFolder(file.weights, args.model);
        if (missing.length > 0) throw new UsageError(`${file.path}: ${missing.length} adapted layer(s) match no layer of --model ${args.model}: ${missing.join(", ")}`);
      }
      const written = writeLoraFile(file.weights, to, args.out, { unetLayout, twoTextEncoders });
      const layers = Object.fromEntries([...file.weights].map(([c, m]) => [c, m.size]));
      if (args.json) process.stdout.write(`${JSON.stringify({ in: file.path, from: file.format, to, files: written, layers })}\n`);
      else process.stdout.write(`${file.format} → ${to}: ${Object.entries(layers).map(([c, n]) => `${n} ${c} layers`).join(", ")}; wrote ${written.join(", ")}\n`);
    } catch (err) {
      if ((err as Error).name === "LoraFormatError" || (err as Error).name === "NameTableError") throw new UsageError((err as Error).message);
      throw err;
    }
  },
});

export default defineCommand({
  meta: { name: "lora", description: "LoRA file tools (convert between formats)." },
  subCommands: { convert },
});
