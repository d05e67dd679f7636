// The demo's knobs, their defaults, and how a resumed run reconciles the knobs it was given with
// the ones it started with.
//
// The defaults are sized so the whole loop (pairs → labels → DPO → evaluation → report) takes at
// most 15 minutes on a 2-core laptop CPU with the shipped 32×32 emoji model; the README's results
// table comes from a run with these defaults.
import type { SamplerName } from "../diffusion/index.js";
import type { PairingMode } from "../feedback/pairs.js";

/** Bad demo input (a knob, a folder, a resume that cannot work): the CLI shows it as a usage error. */
export class DemoError extends Error {
  override name = "DemoError";
}

export interface DemoSettings {
  /** The base model: a diffusers folder. */
  model: string;
  /** "lora" (default: the reference is the same UNet with adapters off) or "full" (a frozen copy). */
  finetune: "lora" | "full";
  /** Training captions that get candidate pairs. */
  pairsPrompts: number;
  /** Held-out captions that get candidate pairs (labelled, never trained on) for implicit accuracy. */
  heldoutPairsPrompts: number;
  /** Candidates per prompt; "all" pairing gives K(K−1)/2 pairs per prompt. */
  k: number;
  pairing: PairingMode;
  /** Sampler, steps and guidance of the candidates and of the evaluation samples. */
  sampler: SamplerName;
  sampleSteps: number;
  guidance: number;
  /** The reward that labels the pairs (AI feedback). */
  labelReward: string;
  /** Rewards that judge the evaluation too but did not label the pairs. */
  otherRewards: string[];
  /** Optimizer steps of DPO (per round). */
  steps: number;
  /**
   * On-policy rounds: round 1 trains on the base model's pairs; each later round samples new pairs
   * from the previous round's policy (the next `pairsPrompts` training captions), labels and trains on.
   */
  rounds: number;
  /** Pairs per optimizer step. */
  batch: number;
  /** β in the official convention: inside = −(β/2)·((Lw − Ll) − (Rw − Rl)). */
  beta: number;
  /** λ of an SFT term on the chosen image mixed into the DPO loss (loss + λ·L_w); 0 is the paper's loss. */
  sftWeight: number;
  /** The optimizer's learning rate (as applied: not multiplied by the batch, unlike `train --lr`). */
  lr: number;
  warmup: number;
  loraRank: number;
  /** LoRA α (the update is scaled by α/r). */
  loraAlpha: number;
  /** Probability of an empty caption per pair while training (keeps guidance working). */
  promptDropout: number;
  /**
   * Where the evaluation captions and the held-out pairs' captions come from:
   *   "heldout-emoji"  emoji held out of the base model's pretraining (new concepts to it)
   *   "dpo-unseen"     emoji the base model was pretrained on, but whose captions DPO never trains on
   *                    in any round (the paper's setting: SDXL knows PartiPrompts' concepts, and
   *                    Pick-a-Pic training never saw those prompts)
   */
  evalCaptions: EvalCaptions;
  /** Held-out captions the tuned and the base model are compared on. */
  evalPrompts: number;
  /** Seeds per evaluation prompt (≥ 2 for the diversity figure). */
  seeds: number;
  /** Random timesteps per held-out pair for implicit accuracy (the paper: 10). */
  implicitDraws: number;
  /** Seed of the prompt order, the candidates' seeds and training's randomness. */
  seed: number;
  /** Training checkpoints every N steps (what a killed run resumes from). */
  checkpointEvery: number;
}

export const EVAL_CAPTIONS = ["heldout-emoji", "dpo-unseen"] as const;
export type EvalCaptions = (typeof EVAL_CAPTIONS)[number];

/** Learning rate per fine-tuning mode when none is given. */
export const DEFAULT_LR = { lora: 1e-3, full: 1e-4 } as const;

export const DEFAULT_SETTINGS: Omit<DemoSettings, "lr"> = {
  model: "models/emoji-base",
  finetune: "lora",
  // the README's measured run C: 11 min 47 s on a quiet 2-core machine (more captions helped most)
  pairsPrompts: 96,
  heldoutPairsPrompts: 12,
  k: 4,
  pairing: "all",
  // ancestral sampling gives visibly smoother samples from the small emoji model than DDIM
  sampler: "euler_ancestral",
  sampleSteps: 10,
  guidance: 3,
  labelReward: "alignment",
  otherRewards: ["category", "appeal"],
  steps: 300,
  rounds: 1,
  batch: 8,
  beta: 5000,
  sftWeight: 0,
  warmup: 20,
  loraRank: 8,
  loraAlpha: 8,
  promptDropout: 0.1,
  evalCaptions: "heldout-emoji",
  evalPrompts: 32,
  seeds: 2,
  implicitDraws: 10,
  seed: 0,
  checkpointEvery: 50,
};

/** Which stage first reads each knob (a knob changed after that stage finished cannot take effect). */
export const SETTING_STAGE: Record<keyof DemoSettings, "pairs" | "label" | "train" | "eval"> = {
  model: "pairs", pairsPrompts: "pairs", heldoutPairsPrompts: "pairs", k: "pairs", pairing: "pairs", sampler: "pairs",
  sampleSteps: "pairs", guidance: "pairs", seed: "pairs", evalCaptions: "pairs", labelReward: "label", finetune: "train", steps: "train", rounds: "train",
  batch: "train", beta: "train", sftWeight: "train", lr: "train", warmup: "train", loraRank: "train", loraAlpha: "train", promptDropout: "train",
  checkpointEvery: "train", otherRewards: "eval", evalPrompts: "eval", seeds: "eval", implicitDraws: "eval",
};

/** Fills defaults (lr by fine-tuning mode) and checks every knob; errors name the knob. */
export function resolveSettings(given: Partial<DemoSettings>): DemoSettings {
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) as Partial<DemoSettings>;
  const finetune = defined.finetune ?? DEFAULT_SETTINGS.finetune;
  const s: DemoSettings = { ...DEFAULT_SETTINGS, lr: DEFAULT_LR[finetune], ...defined };
  const int = (k: keyof DemoSettings, min: number) => {
    const v = s[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) throw new DemoError(`demo: ${k} must be an integer ≥ ${min}, got ${String(v)}`);
  };
  const pos = (k: keyof DemoSettings, allowZero = false) => {
    const v = s[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) throw new DemoError(`demo: ${k} must be a ${allowZero ? "non-negative" : "positive"} number, got ${String(v)}`);
  };
  if (s.finetune !== "lora" && s.finetune !== "full") throw new DemoError(`demo: finetune must be "lora" or "full", got "${String(s.finetune)}"`);
  if (s.pairing !== "all" && s.pairing !== "consecutive") throw new DemoError(`demo: pairing must be "all" or "consecutive", got "${String(s.pairing)}"`);
  int("pairsPrompts", 1); int("heldoutPairsPrompts", 1); int("k", 2); int("sampleSteps", 1); int("steps", 1); int("rounds", 1); int("batch", 1);
  int("warmup", 0); int("loraRank", 1); int("evalPrompts", 1); int("seeds", 1); int("implicitDraws", 1); int("seed", 0); int("checkpointEvery", 0);
  pos("guidance", true); pos("beta"); pos("sftWeight", true); pos("lr"); pos("loraAlpha");
  if (!(s.promptDropout >= 0 && s.promptDropout <= 1)) throw new DemoError(`demo: promptDropout must be in [0, 1], got ${s.promptDropout}`);
  if (!(EVAL_CAPTIONS as readonly string[]).includes(s.evalCaptions)) throw new DemoError(`demo: evalCaptions must be one of ${EVAL_CAPTIONS.join(", ")}, got "${String(s.evalCaptions)}"`);
  if (s.labelReward.trim() === "") throw new DemoError("demo: labelReward must name a reward");
  if (s.otherRewards.includes(s.labelReward)) throw new DemoError(`demo: otherRewards must not include the labelling reward "${s.labelReward}"`);
  return s;
}

/**
 * A resumed run's settings: the saved ones with the knobs given now on top. A new fine-tuning mode
 * without an lr takes that mode's default when the saved lr was the old mode's default (LoRA's
 * 1e-3 makes full fine-tuning diverge); an lr set by hand is kept.
 */
export function resumedSettings(saved: DemoSettings, given: Partial<DemoSettings>): DemoSettings {
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) as Partial<DemoSettings>;
  const merged: Partial<DemoSettings> = { ...saved, ...defined };
  const modeChanged = defined.finetune !== undefined && defined.finetune !== saved.finetune;
  if (modeChanged && defined.lr === undefined && saved.lr === DEFAULT_LR[saved.finetune]) delete merged.lr;
  return resolveSettings(merged);
}

/** Knobs given now that differ from a run's saved ones: [name, saved, given]. */
export function settingConflicts(saved: DemoSettings, given: Partial<DemoSettings>): [keyof DemoSettings, unknown, unknown][] {
  const out: [keyof DemoSettings, unknown, unknown][] = [];
  for (const [k, v] of Object.entries(given) as [keyof DemoSettings, unknown][]) {
    if (v === undefined) continue;
    if (JSON.stringify(v) !== JSON.stringify(saved[k])) out.push([k, saved[k], v]);
  }
  return out;
}
