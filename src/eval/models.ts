// The two models an evaluation compares: the base model folder and the tuned model, given as
//
//   a full model folder (model_index.json)                       → loaded on its own
//   a training run folder (final/ or checkpoints/step-*)         → its final weights, else the latest checkpoint
//   a folder with pytorch_lora_weights.safetensors (trainer's LoRA output, diffusers' name)
//   a folder with unet/diffusion_pytorch_model.safetensors only (trainer's full output)
//   a checkpoint folder with model.safetensors (+ trainer_state.json)
//   a .safetensors file: LoRA adapters (peft/diffusers/kohya keys) or a full UNet state dict
//
// UNet-only weights go into a second copy of the base folder (text encoder, VAE and scheduler
// are the base's, as training froze them). LoRA adapters are injected into the base model ONCE:
// base = adapters off, tuned = adapters on (the trainer's own reference trick), so a LoRA
// evaluation holds one model in memory. The LoRA scale α/r comes from the file's
// lora_adapter_metadata, else from the training config beside it (lora.alpha), else α = r.
// Sampling uses each side's own components; implicit-reward accuracy encodes prompts and images
// with the base's text encoder and VAE for both UNets (Diffusion-DPO trains the UNet only).
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { SafetensorsFile } from "../io/safetensors.js";
import { disposeTextToImageModel, encodePrompts, loadModelFolder, loadWeightsInto, type TextToImageModel } from "../models/pipeline.js";
import { loadLoraStateDict, loraConfig, loraScaleFromMetadata, normalizeLoraKey, setLoraEnabled } from "../nn/lora.js";
import type { DenoisingModel } from "../train/dpo-step.js";
import { latestCheckpoint } from "../train/checkpoint.js";
import { generate, type RgbImage } from "../sample/generate.js";
import { NoiseSchedule, samplerForScheduler, type SamplerName } from "../diffusion/index.js";
import type { TrainingNoising } from "../diffusion/flow/training.js";
import type { Tensor } from "../tensor/index.js";

export type TunedKind = "full" | "unet" | "lora";

/** A sampler name as eval.json records it: the UNet samplers, or the SD3 / Flux pipelines' FlowMatch Euler. */
export type EvalSamplerName = SamplerName | "flow_match_euler";

export interface EvalSampleRequest {
  prompts: string[];
  seeds: number[];
  sampler: EvalSamplerName;
  steps: number;
  guidance: number;
  batchSize: number;
  /** After each image. */
  onImage?: (prompt: string) => void;
}

/** What implicit-reward accuracy needs beside the two denoisers (both sides share them: only the denoiser trains). */
export interface ImplicitInputs {
  encodePrompts: (prompts: string[]) => Tensor;
  /** Pixels in [−1, 1] → the denoiser's input space (the VAE's scaled latents). */
  encodeImages?: (pixels: Tensor) => Tensor;
  /** The DDPM schedule (UNet models) or the family's training noising (flow matching), exactly one. */
  schedule?: NoiseSchedule;
  noising?: TrainingNoising;
}

/**
 * The two models an evaluation compares, whatever the family: evaluate() reaches the models only
 * through these (the UNet pair below, the SD3 / Flux pair in src/eval/flow-models.ts).
 */
export interface EvalModels {
  /** "full" | "unet" | "lora", or "transformer" (SD3 / Flux transformer-only weights). */
  readonly kind: string;
  readonly source: { base: string; tuned: string; lora?: { rank: number; alpha: number; targets: string[] } };
  /** The sampler used when none is asked for (UNet: the base folder's scheduler class, as in diffusers). */
  defaultSampler(): EvalSamplerName;
  /** One image per (prompt, seed) from one side. */
  sample(which: "base" | "tuned", request: EvalSampleRequest): RgbImage[];
  /** A denoiser call for one side (adapters switched for the duration of each call). */
  denoiser(which: "base" | "tuned"): DenoisingModel;
  implicitInputs(): ImplicitInputs;
  dispose(): void;
}

export interface ModelPair extends EvalModels {
  readonly kind: TunedKind;
  /** Where each model came from (for the report). */
  readonly source: { base: string; tuned: string; lora?: { rank: number; alpha: number; targets: string[] } };
  /** Runs fn with the base or the tuned model active (for LoRA: the one model with adapters off or on). */
  use<T>(which: "base" | "tuned", fn: (model: TextToImageModel) => T): T;
  /** A UNet call for one side (adapters switched for the duration of each call). */
  denoiser(which: "base" | "tuned"): DenoisingModel;
  /** The model whose text encoder / VAE / scheduler both sides share (the base). */
  readonly shared: TextToImageModel;
  dispose(): void;
}

export interface ResolvedTuned {
  kind: TunedKind;
  /** A model folder (full) or a weights file (unet, lora). */
  path: string;
}

function isDir(p: string): boolean {
  return existsSync(p) && statSync(p).isDirectory();
}

/** Decides what a `--tuned` argument points at; see the file comment. */
export function resolveTuned(spec: string): ResolvedTuned {
  const p = resolve(spec);
  if (!existsSync(p)) throw new Error(`tuned model ${spec} does not exist (give a model folder, a training run folder, or a LoRA .safetensors file)`);
  if (!isDir(p)) {
    if (!p.endsWith(".safetensors")) throw new Error(`tuned model ${spec}: a file must be .safetensors (LoRA adapters or UNet weights)`);
    return { kind: classifyWeights(p), path: p };
  }
  if (existsSync(join(p, "model_index.json"))) return { kind: "full", path: p };
  const lora = join(p, "pytorch_lora_weights.safetensors");
  if (existsSync(lora)) return { kind: "lora", path: lora };
  const unet = join(p, "unet", "diffusion_pytorch_model.safetensors");
  if (existsSync(unet)) return { kind: "unet", path: unet };
  const model = join(p, "model.safetensors");
  if (existsSync(model)) return { kind: classifyWeights(model), path: model };
  if (isDir(join(p, "final"))) return resolveTuned(join(p, "final"));
  const ck = existsSync(join(p, "checkpoints")) ? latestCheckpoint(p) : null;
  if (ck !== null) return resolveTuned(ck);
  throw new Error(
    `tuned model ${spec}: found no weights (looked for model_index.json, pytorch_lora_weights.safetensors, ` +
      `unet/diffusion_pytorch_model.safetensors, model.safetensors, final/ and checkpoints/)`,
  );
}

/** "lora" when every key is a LoRA adapter key (peft, diffusers or kohya spelling), else "unet". */
export function classifyWeights(file: string): "lora" | "unet" {
  const f = SafetensorsFile.open(file);
  try {
    const keys = f.keys();
    if (keys.length === 0) throw new Error(`${file} holds no tensors`);
    const lora = keys.every((k) => normalizeLoraKey(k) !== null || /^lora_(unet|te)/.test(k));
    return lora ? "lora" : "unet";
  } finally {
    f.close();
  }
}

/** α for a LoRA file: its metadata, else lora.alpha of a training config beside it (or one level up). */
export function loraAlpha(file: string, metadata: Record<string, string>): number | undefined {
  const fromMeta = loraScaleFromMetadata(metadata);
  if (fromMeta !== null) return fromMeta.alpha;
  const dir = dirname(file);
  for (const name of [join(dir, "training_config.json"), join(dir, "config.json"), join(dir, "..", "training_config.json")]) {
    if (!existsSync(name)) continue;
    try {
      const cfg = JSON.parse(readFileSync(name, "utf8")) as { lora?: { alpha?: unknown } };
      if (typeof cfg.lora?.alpha === "number") return cfg.lora.alpha;
    } catch {
      // not a training config: ignore
    }
  }
  return undefined;
}

/**
 * The base model folder a training run was started from: `model` in its final training_config.json
 * or its latest checkpoint's config.json (relative paths as the run recorded them). Null when the
 * folder is no training run.
 */
export function runBaseModel(runDir: string): string | null {
  const candidates = [join(runDir, "final", "training_config.json"), join(runDir, "training_config.json")];
  const ck = existsSync(join(runDir, "checkpoints")) ? latestCheckpoint(runDir) : null;
  if (ck !== null) candidates.push(join(ck, "config.json"));
  for (const file of candidates) {
    if (!existsSync(file)) continue;
    try {
      const cfg = JSON.parse(readFileSync(file, "utf8")) as { model?: unknown };
      if (typeof cfg.model === "string" && cfg.model !== "") return cfg.model;
    } catch {
      // not a training config: try the next one
    }
  }
  return null;
}

type UnetPairCore = Omit<ModelPair, "defaultSampler" | "sample" | "implicitInputs">;

/** The EvalModels members of a UNet pair, from its `use` and `shared`. */
function withEvalHooks(core: UnetPairCore): ModelPair {
  return {
    ...core,
    defaultSampler: () => samplerForScheduler(core.shared.schedulerClass),
    sample(which, r) {
      if (r.sampler === "flow_match_euler") throw new Error("the flow_match_euler sampler is for SD3 / Flux folders; this is a UNet model");
      const sampler = r.sampler;
      return core.use(which, (model) => generate({
        model, prompts: r.prompts, seeds: r.seeds, sampler, steps: r.steps, guidance: r.guidance, batchSize: r.batchSize,
        onEvent: (e) => { if (e.type === "image") r.onImage?.(e.prompt); },
      }));
    },
    implicitInputs() {
      const shared = core.shared;
      return {
        encodePrompts: (ps) => encodePrompts(shared, ps),
        encodeImages: shared.vae ? (px) => shared.vae!.encodeLatents(px) : undefined,
        schedule: new NoiseSchedule(shared.scheduler),
      };
    },
  };
}

/** Loads the base folder and the tuned model (see the file comment). */
export function loadModelPair(baseDir: string, tunedSpec: string, opts: { device?: string } = {}): ModelPair {
  const tuned = resolveTuned(tunedSpec);
  const base = loadModelFolder(baseDir, { device: opts.device });
  try {
    if (tuned.kind === "lora") {
      const f = SafetensorsFile.open(tuned.path);
      let weights;
      try {
        weights = f.readAll();
        loadLoraStateDict(base.unet, weights, { alpha: loraAlpha(tuned.path, f.metadata), source: tuned.path });
      } finally {
        f.close();
        for (const t of weights?.values() ?? []) t.dispose();
      }
      const lora = loraConfig(base.unet) ?? undefined;
      const set = (which: "base" | "tuned") => setLoraEnabled(base.unet, which === "tuned");
      return withEvalHooks({
        kind: "lora",
        source: { base: resolve(baseDir), tuned: tuned.path, lora },
        shared: base,
        use(which, fn) {
          set(which);
          try {
            return fn(base);
          } finally {
            setLoraEnabled(base.unet, true);
          }
        },
        denoiser(which) {
          return (x, t, c) => {
            set(which);
            try {
              return base.unet.forward(x, t, c);
            } finally {
              setLoraEnabled(base.unet, true);
            }
          };
        },
        dispose: () => disposeTextToImageModel(base),
      });
    }
    let other: TextToImageModel;
    if (tuned.kind === "full") {
      other = loadModelFolder(tuned.path, { device: opts.device });
    } else {
      other = loadModelFolder(baseDir, { device: opts.device });
      try {
        loadWeightsInto(other.unet, [tuned.path]);
      } catch (err) {
        disposeTextToImageModel(other);
        throw new Error(`tuned UNet weights ${tuned.path} do not fit the base model ${baseDir}: ${(err as Error).message}`);
      }
    }
    const models = { base, tuned: other };
    return withEvalHooks({
      kind: tuned.kind,
      source: { base: resolve(baseDir), tuned: tuned.path },
      shared: base,
      use: (which, fn) => fn(models[which]),
      denoiser: (which) => (x, t, c) => models[which].unet.forward(x, t, c),
      dispose() {
        disposeTextToImageModel(base);
        disposeTextToImageModel(other);
      },
    });
  } catch (err) {
    disposeTextToImageModel(base);
    throw err;
  }
}
