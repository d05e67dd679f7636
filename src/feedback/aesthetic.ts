// The LAION "improved aesthetic predictor" (christophschuhmann/improved-aesthetic-predictor) as a
// reward: an MLP over the L2-normalised CLIP ViT-L/14 image embedding, the prompt unused.
//
//   u = f / ‖f‖₂ (‖f‖ = 0 → 1, as its normalized())      f = CLIP get_image_features(image)
//   score = L7(L6(L4(L2(L0(u)))))                          Linear layers of its nn.Sequential;
//                                                          indices 1, 3, 5 are Dropout (identity
//                                                          here), no activations
// Keys layers.{0,2,4,6,7}.{weight,bias} (768 → 1024 → 128 → 64 → 16 → 1 for ViT-L/14; sizes are
// read from the file). The public weights (sac+logos+ava1-l14-linearMSE.pth, a torch.save file)
// load as they are, or as safetensors.
//
// On disk (`--reward aesthetic=PATH`): PATH is a folder holding the MLP (aesthetic_mlp.safetensors,
// or its only .safetensors other than model.safetensors, or .pth) and the CLIP backbone — a `clip/`
// sub-folder, or PATH itself when it is a CLIPModel folder; or PATH is the MLP file, with the CLIP
// backbone in the `clip/` folder beside it.
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { readSafetensorsSync } from "../io/safetensors.js";
import { readTorchCheckpoint } from "../models/clip/torch-checkpoint.js";
import { Linear, Module } from "../nn/index.js";
import type { RgbImage } from "../sample/generate.js";
import { noGrad, tidy, type Tensor } from "../tensor/index.js";
import { ClipScorer, loadClipBackbone, type ClipScorerOptions } from "./clip-rewards.js";
import { checkRewardInputs, type RewardModel, type ScoreOptions } from "./reward.js";

/** The Linear layers' indices in the predictor's nn.Sequential. */
export const AESTHETIC_LINEAR_INDICES = [0, 2, 4, 6, 7] as const;
export const AESTHETIC_EXPECTED_KEYS = AESTHETIC_LINEAR_INDICES.flatMap((i) => [`layers.${i}.weight`, `layers.${i}.bias`]);

class SequentialLinears extends Module {
  readonly linears: Linear[] = [];
  constructor(dims: number[]) {
    super();
    AESTHETIC_LINEAR_INDICES.forEach((idx, k) => {
      this.linears.push(this.child(String(idx), new Linear(dims[k]!, dims[k + 1]!)));
    });
  }
}

export class AestheticMlp extends Module {
  readonly layers: SequentialLinears;
  /** [input, hidden…, 1]. */
  constructor(readonly dims: number[]) {
    super();
    if (dims.length !== AESTHETIC_LINEAR_INDICES.length + 1) throw new Error(`AestheticMlp: needs ${AESTHETIC_LINEAR_INDICES.length + 1} sizes, got ${dims.length}`);
    this.layers = this.child("layers", new SequentialLinears(dims));
  }
  get inputSize(): number {
    return this.dims[0]!;
  }
  /** u [N, D] (already normalised) → [N, 1]. */
  forward(u: Tensor): Tensor {
    let h = u;
    for (const l of this.layers.linears) h = l.forward(h);
    return h;
  }
}

/** Loads the predictor's weights; wrong or missing keys are an error naming the file and the expected keys. */
export function loadAestheticMlp(path: string): AestheticMlp {
  if (!existsSync(path)) throw new Error(`${path}: not found (the aesthetic predictor's weights as .safetensors or .pth, keys ${AESTHETIC_EXPECTED_KEYS.join(", ")})`);
  const tensors = /\.(pt|pth|ckpt|bin)$/.test(path) ? readTorchCheckpoint(path).tensors : readSafetensorsSync(path).tensors;
  try {
    const missing = AESTHETIC_EXPECTED_KEYS.filter((k) => !tensors.has(k));
    const extra = [...tensors.keys()].filter((k) => !AESTHETIC_EXPECTED_KEYS.includes(k));
    if (missing.length > 0 || extra.length > 0) {
      throw new Error(`${path}: not the LAION aesthetic predictor (${missing.length ? `missing ${missing.join(", ")}` : ""}${missing.length && extra.length ? "; " : ""}${extra.length ? `unexpected ${extra.slice(0, 8).join(", ")}${extra.length > 8 ? ", …" : ""}` : ""}); expected exactly ${AESTHETIC_EXPECTED_KEYS.join(", ")}`);
    }
    const dims = [tensors.get("layers.0.weight")!.shape[1]!, ...AESTHETIC_LINEAR_INDICES.map((i) => tensors.get(`layers.${i}.weight`)!.shape[0]!)];
    if (dims[dims.length - 1] !== 1) throw new Error(`${path}: layers.7.weight has ${dims[dims.length - 1]} outputs; the predictor outputs one score`);
    const mlp = new AestheticMlp(dims);
    try {
      mlp.loadStateDict(tensors, { source: path });
    } catch (err) {
      mlp.dispose();
      throw err;
    }
    mlp.requiresGrad(false);
    mlp.eval();
    return mlp;
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}

/** u = f / ‖f‖ with a zero norm taken as 1 (the predictor's normalized()). */
export function aestheticInput(features: Tensor): Tensor {
  return tidy(() => {
    const n = features.norm([1], true);
    return features.div(n.add(n.eq(0).to(n.dtype)));
  });
}

export function aestheticReward(scorer: ClipScorer, mlp: AestheticMlp, name = "aesthetic"): RewardModel {
  const p = scorer.backbone.model.config.projectionDim;
  if (p !== mlp.inputSize) {
    throw new Error(`reward "${name}": the aesthetic MLP takes ${mlp.inputSize}-d embeddings but the CLIP backbone (${scorer.backbone.source}) gives ${p}-d; the predictor needs the CLIP it was trained on (ViT-L/14 for the public weights)`);
  }
  const reward: RewardModel = {
    name,
    description: `LAION aesthetic predictor: MLP on the normalised CLIP image embedding (no prompt) — ${scorer.backbone.source}`,
    async score(images: readonly RgbImage[], prompts: readonly string[], opts: ScoreOptions = {}): Promise<number[]> {
      checkRewardInputs(reward, images, prompts);
      if (images.length === 0) return [];
      const total = images.length;
      const f = scorer.imageFeatures(images, `reward "${name}"`, (done) => opts.onEvent?.({ type: "scored", reward: name, done, total }));
      try {
        return noGrad(() => tidy(() => mlp.forward(aestheticInput(f)).reshape([images.length]).toArray() as number[]));
      } finally {
        f.dispose();
      }
    },
    dispose: () => { scorer.dispose(); mlp.dispose(); },
  };
  return reward;
}

/** Finds the MLP file and the CLIP backbone path for `aesthetic=PATH` (see the file comment). */
export function resolveAestheticPaths(path: string): { mlp: string; clip: string } {
  if (!existsSync(path)) throw new Error(`${path}: not found (the aesthetic reward needs a folder with the MLP .safetensors and a clip/ CLIP ViT-L/14 folder)`);
  if (!statSync(path).isDirectory()) {
    const clip = join(dirname(path), "clip");
    if (!existsSync(clip)) throw new Error(`${path}: the aesthetic MLP needs its CLIP backbone; put the CLIP ViT-L/14 folder at ${clip}`);
    return { mlp: path, clip };
  }
  const files = readdirSync(path).filter((f) => (f.endsWith(".safetensors") && f !== "model.safetensors") || /\.(pth|pt)$/.test(f));
  const mlpFile = files.includes("aesthetic_mlp.safetensors") ? "aesthetic_mlp.safetensors" : files.length === 1 ? files[0]! : null;
  if (mlpFile === null) {
    throw new Error(`${path}: expected the aesthetic MLP as aesthetic_mlp.safetensors (keys ${AESTHETIC_EXPECTED_KEYS.join(", ")}); found ${files.length ? files.join(", ") : "no .safetensors besides model.safetensors"}`);
  }
  const sub = join(path, "clip");
  const clip = existsSync(sub) ? sub : existsSync(join(path, "config.json")) ? path : null;
  if (clip === null) throw new Error(`${path}: no CLIP backbone for the aesthetic MLP; put the CLIP ViT-L/14 folder (config.json + model.safetensors) at ${sub}`);
  return { mlp: join(path, mlpFile), clip };
}

export function loadAestheticReward(path: string, opts: ClipScorerOptions & { name?: string } = {}): RewardModel {
  const paths = resolveAestheticPaths(path);
  const mlp = loadAestheticMlp(paths.mlp);
  let backbone;
  try {
    backbone = loadClipBackbone(paths.clip);
  } catch (err) {
    mlp.dispose();
    throw err;
  }
  const scorer = new ClipScorer(backbone, opts);
  try {
    return aestheticReward(scorer, mlp, opts.name ?? "aesthetic");
  } catch (err) {
    scorer.dispose();
    mlp.dispose();
    throw err;
  }
}
