// The two models an evaluation compares for SD3 and Flux folders (the EvalModels of
// src/eval/models.ts), and loadEvalModels, which picks this pair or the UNet pair from the base
// folder's model_index.json — the one place eval looks at the family.
//
// The tuned side, given as
//   a full pipeline folder (model_index.json)                            → loaded on its own
//   a training run / final folder with pytorch_lora_weights.safetensors → LoRA (adapters into the base, once)
//   a training run / final folder with transformer/diffusion_pytorch_model.safetensors (train --full)
//   a checkpoint (model.safetensors) or a .safetensors file: LoRA keys → LoRA, else transformer weights
//     (keys with or without the trainer's "transformer." prefix)
// Transformer-only weights go into a second copy of the base pipeline (text encoders, VAE and
// scheduler frozen in training). LoRA: base = adapters off, tuned = adapters on. Sampling is the
// pipelines' FlowMatch Euler from each seed's latents (generateFlowImages); implicit accuracy noises
// with the training's flow matching (σ and ε shared by chosen and rejected, flowTrainingNoising) and
// encodes with the base's text encoders and VAE for both sides.
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { SafetensorsFile } from "../io/safetensors.js";
import { loadLoraStateDict, loraConfig, setLoraEnabled } from "../nn/lora.js";
import { loadWeightsInto } from "../models/pipeline.js";
import { disposeFlowPipeline, flowFamilyOf, generateFlowImages, loadFlowPipeline, type FlowPipeline } from "../models/flow-generate.js";
import { FluxDenoiser, SD3Denoiser, flowPromptEncoder, flowTrainingNoising } from "../models/flow-dpo.js";
import { loadModelPair, loraAlpha, resolveTuned, type EvalModels } from "./models.js";

export interface FlowModelsOptions {
  /** Image side in pixels for the samples (default: SD3 sample_size × 8, Flux 1024). */
  size?: number;
}

type FlowTuned = { kind: "full" | "lora" | "transformer"; path: string };

/** Decides what a `--tuned` argument is for a flow base (see the file comment). */
export function resolveFlowTuned(spec: string): FlowTuned {
  const p = resolve(spec);
  const transformerIn = (dir: string) => join(dir, "transformer", "diffusion_pytorch_model.safetensors");
  if (existsSync(p) && statSync(p).isDirectory() && !existsSync(join(p, "model_index.json")) && !existsSync(join(p, "pytorch_lora_weights.safetensors"))) {
    for (const dir of [p, join(p, "final")]) if (existsSync(transformerIn(dir))) return { kind: "transformer", path: transformerIn(dir) };
  }
  const r = resolveTuned(spec);
  return { kind: r.kind === "unet" ? "transformer" : r.kind, path: r.path };
}

function denoiserOf(flow: FlowPipeline): SD3Denoiser | FluxDenoiser {
  return flow.family === "sd3" ? new SD3Denoiser(flow.pipe.transformer) : new FluxDenoiser(flow.pipe.transformer);
}

/** Loads an SD3 / Flux base folder and its tuned model. */
export function loadFlowModelPair(baseDir: string, tunedSpec: string, opts: FlowModelsOptions = {}): EvalModels {
  const tuned = resolveFlowTuned(tunedSpec);
  const base = loadFlowPipeline(baseDir);
  const toDispose: FlowPipeline[] = [base];
  try {
    const baseDenoiser = denoiserOf(base);
    let lora: { rank: number; alpha: number; targets: string[] } | undefined;
    let tunedPipe = base;
    let tunedDenoiser = baseDenoiser;
    if (tuned.kind === "lora") {
      const f = SafetensorsFile.open(tuned.path);
      let weights;
      try {
        weights = f.readAll();
        loadLoraStateDict(baseDenoiser, weights, { alpha: loraAlpha(tuned.path, f.metadata), source: tuned.path });
      } finally {
        f.close();
        for (const t of weights?.values() ?? []) t.dispose();
      }
      lora = loraConfig(baseDenoiser) ?? undefined;
    } else {
      tunedPipe = loadFlowPipeline(tuned.kind === "full" ? tuned.path : baseDir);
      toDispose.push(tunedPipe);
      if (tunedPipe.family !== base.family) throw new Error(`tuned model ${tuned.path} is a ${tunedPipe.family} pipeline but the base ${baseDir} is ${base.family}`);
      if (tuned.kind === "transformer") {
        try {
          // the trainer's checkpoints name the weights through its denoiser ("transformer.…")
          loadWeightsInto(tunedPipe.pipe.transformer, [tuned.path], { rename: (k) => (k.startsWith("transformer.") ? k.slice("transformer.".length) : k) });
        } catch (err) {
          throw new Error(`tuned transformer weights ${tuned.path} do not fit the base model ${baseDir}: ${(err as Error).message}`);
        }
      }
      tunedDenoiser = denoiserOf(tunedPipe);
    }
    for (const d of [baseDenoiser, tunedDenoiser]) d.requiresGrad(false).eval();
    // LoRA: one model, adapters on for "tuned" and off for "base" during each call
    const side = <T>(which: "base" | "tuned", fn: (p: FlowPipeline, d: SD3Denoiser | FluxDenoiser) => T): T => {
      if (tuned.kind !== "lora") return which === "base" ? fn(base, baseDenoiser) : fn(tunedPipe, tunedDenoiser);
      setLoraEnabled(baseDenoiser, which === "tuned");
      try {
        return fn(base, baseDenoiser);
      } finally {
        setLoraEnabled(baseDenoiser, true);
      }
    };
    return {
      kind: tuned.kind,
      source: { base: resolve(baseDir), tuned: tuned.path, ...(lora ? { lora } : {}) },
      defaultSampler: () => "flow_match_euler",
      sample(which, r) {
        if (r.sampler !== "flow_match_euler") throw new Error(`SD3 / Flux folders sample with FlowMatch Euler (flow_match_euler), not ${r.sampler}`);
        return side(which, (p) => generateFlowImages(p, {
          prompts: r.prompts, seeds: r.seeds, steps: r.steps, guidance: r.guidance, size: opts.size,
          onEvent: (e) => { if (e.done === e.total) r.onImage?.(r.prompts[e.image]!); },
        }));
      },
      denoiser: (which) => (x, t, c) => side(which, (_p, d) => d.forward(x, t, c)),
      implicitInputs: () => ({
        encodePrompts: flowPromptEncoder(base),
        encodeImages: (px) => base.pipe.vae.encodeLatents(px),
        noising: flowTrainingNoising(base.family, base.pipe.scheduler),
      }),
      dispose: () => { for (const p of toDispose) disposeFlowPipeline(p); },
    };
  } catch (err) {
    for (const p of toDispose) disposeFlowPipeline(p);
    throw err;
  }
}

/** The pair for `diffusion-dpo eval`: SD3 / Flux folders → loadFlowModelPair, anything else → the UNet pair. */
export function loadEvalModels(baseDir: string, tunedSpec: string, opts: FlowModelsOptions & { device?: string } = {}): EvalModels {
  return flowFamilyOf(baseDir) !== null ? loadFlowModelPair(baseDir, tunedSpec, opts) : loadModelPair(baseDir, tunedSpec, { device: opts.device });
}
