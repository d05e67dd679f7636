// The Diffusion-DPO loss family (Wallace et al. 2023, arXiv 2311.12908) and its relatives.
//
// One function computes the per-sample denoising errors (`perSampleErrors`); every method is a
// small function of those errors, looked up in one table typed `satisfies Record<…>` so that a
// method without a branch fails to compile (diffusers' `ipo` branch read an undefined `args.beta`
// and crashed at run time; here a typo is a type error and every branch has a test).
//
// β convention (the OFFICIAL one, SalesforceAIResearch/DiffusionDPO train.py):
//
//     inside = −(β/2) · ((L_chosen − L_rejected) − (R_chosen − R_rejected)),   default β = 5000
//
// diffusers' research example writes `β_d · ((R_chosen − R_rejected) − (L_chosen − L_rejected))`
// with default β_d = 2500: the same objective with β_d = β/2. Convert with `betaFromDiffusers`
// (2500 → 5000) and `betaToDiffusers`.
//
// At initialisation the policy equals the reference, so inside = 0 for every pair and the DPO
// loss is −log σ(0) = ln 2 ≈ 0.6931. The loss stays near ln 2 for a long time because the
// per-sample errors move by tiny amounts; watch implicitAcc and the margin instead.
import { mseLoss, noGrad, type Tensor } from "../tensor/index.js";

export type PreferenceMethod = "dpo" | "sft" | "hinge" | "ipo" | "mapo";
export const PREFERENCE_METHODS: readonly PreferenceMethod[] = ["dpo", "sft", "hinge", "ipo", "mapo"];

/** Default β, official convention (SDXL runs and the paper's SD1.5 AI-feedback runs). */
export const DEFAULT_BETA = 5000;

/** diffusers' `--beta_dpo` (no ½ in the loss) → the official β used here: β = 2·β_d. */
export function betaFromDiffusers(betaDiffusers: number): number {
  return 2 * betaDiffusers;
}
/** The official β used here → diffusers' `--beta_dpo`: β_d = β/2 (5000 → 2500). */
export function betaToDiffusers(beta: number): number {
  return beta / 2;
}

/** Per-sample errors of one model on a batch of pairs, each [N]. */
export interface PolicyErrors {
  /** L_w: mean over channels and pixels of (pred − target)² for the chosen images. */
  lw: Tensor;
  /** L_l: the same for the rejected images. */
  ll: Tensor;
}
/** The frozen reference model's per-sample errors, each [N] (computed without gradients). */
export interface ReferenceErrors {
  rw: Tensor;
  rl: Tensor;
}

/**
 * Per-sample squared error, mean over every dim but the batch (channels and pixels: the official
 * code's mean, not a sum), split into the chosen and rejected halves of a `[chosen…, rejected…]`
 * batch of 2N. Computed in float32 (float64 inputs stay float64), as the official code casts
 * `model_pred.float()` before the MSE.
 */
export function perSampleErrors(pred: Tensor, target: Tensor): PolicyErrors {
  const n2 = pred.shape[0] ?? 0;
  if (pred.shape.join(",") !== target.shape.join(",")) {
    throw new Error(`perSampleErrors: prediction [${pred.shape.join(", ")}] and target [${target.shape.join(", ")}] differ in shape`);
  }
  if (n2 === 0 || n2 % 2 !== 0) {
    throw new Error(`perSampleErrors: the batch must hold 2N samples laid out [chosen…, rejected…], got ${n2}`);
  }
  const p = pred.dtype === "f64" ? pred : pred.float();
  const t = target.dtype === "f64" ? target : target.float();
  const errors = mseLoss(p, t, "per-sample");
  if (p !== pred) p.dispose();
  if (t !== target) t.dispose();
  const [lw, ll] = errors.chunk(2, 0) as [Tensor, Tensor];
  errors.dispose();
  return { lw, ll };
}

/** Options shared by the methods (each method reads the ones it needs). */
export interface PreferenceOptions {
  /** β in the official convention (inside = −(β/2)·margin). Default 5000. */
  beta?: number;
  /**
   * MaPO only: weight of the odds-ratio term (MaPO's `beta_mapo`, default 0.1), the SNR-like scale
   * inside the log-odds (`snr_value`, default 0.2), and T, the number of training timesteps that
   * multiplies the log-odds (default 1000).
   */
  mapo?: { weight?: number; snrValue?: number; numTrainTimesteps?: number };
  /**
   * dpo, hinge and ipo: λ of an SFT term on the chosen image added to every pair's loss,
   * loss = method + λ·L_w (SimpleTuner's SFT mix; RPO's NLL term). Default 0, the paper's loss.
   * The DPO term's slope in L_w is (β/2)·σ(−inside), β/4 at the start, so λ = β/4 weighs the two alike.
   * It keeps the policy's denoising of the chosen images from degrading while the margin grows.
   */
  sftWeight?: number;
}

export interface PreferenceInput extends PreferenceOptions {
  policy: PolicyErrors;
  /** Required by dpo, hinge and ipo; optional for sft and mapo (then only used for metrics). */
  reference?: ReferenceErrors;
}

/** Scalars (0-d tensors, detached) logged every step. */
export interface PreferenceMetrics {
  /** mean over pairs of [inside > 0] + ½·[inside = 0] (ties count ½, as diffusers). */
  implicitAcc?: Tensor;
  /** 0.5·(mean L_w + mean L_l), the policy's plain denoising MSE ("mse/model"). */
  policyMse: Tensor;
  /** 0.5·(mean R_w + mean R_l) ("mse/ref"). */
  referenceMse?: Tensor;
  /** mean over pairs of (L_w − L_l) − (R_w − R_l); negative is good ("rewards/margin" up to −β/2). */
  margin?: Tensor;
  /** mean over pairs of inside = −(β/2)·margin. */
  inside?: Tensor;
  /** mean L_w and mean L_l. */
  chosenMse: Tensor;
  rejectedMse: Tensor;
}

export interface PreferenceLossResult {
  /** The scalar to call backward() on: the mean over pairs of the per-pair loss. */
  loss: Tensor;
  /** Per-pair losses [N] (before the mean). */
  perPair: Tensor;
  /** Per-pair inside [N] when a reference was given (detached). */
  insidePerPair?: Tensor;
  metrics: PreferenceMetrics;
}

interface Terms {
  lw: Tensor;
  ll: Tensor;
  rw?: Tensor;
  rl?: Tensor;
  /** −(β/2)·((lw − ll) − (rw − rl)), when a reference is given. */
  inside?: Tensor;
  beta: number;
}

interface MethodSpec {
  /** Whether the loss itself needs the reference model (else it is used for metrics only). */
  needsReference: boolean;
  /** One-line formula for docs and error messages. */
  formula: string;
  /** Per-pair loss [N]. */
  perPair(terms: Terms, opts: PreferenceOptions): Tensor;
}

function requireInside(terms: Terms, method: PreferenceMethod): Tensor {
  if (terms.inside === undefined) {
    throw new Error(`preference method "${method}" needs the reference model's errors (reference: {rw, rl})`);
  }
  return terms.inside;
}

/**
 * The methods. With logits = (R_w − R_l) − (L_w − L_l) (diffusers' and TRL's name) the official
 * inside is (β/2)·logits, and β_d = β/2 is diffusers' β.
 *
 * - dpo   −log σ(inside)                                 Diffusion-DPO, the paper's eq. 14
 * - sft   L_w                                            plain denoising MSE on the chosen image
 * - hinge relu(1 − inside) = relu(1 − β_d·logits)        SLiC-style hinge, as diffusers
 * - ipo   (logits − 1/(2β_d))² = (logits − 1/β)²         IPO (Azar et al. 2023) with the DPO β;
 *                                                        diffusers' branch used an undefined args.beta
 * - mapo  L_w − w·log σ(T·(o(L_w) − o(L_l))),  o(L) = sL/(e^{sL} − 1)
 *         MaPO, Hong et al. 2024 ("Margin-aware Preference Optimization for Aligning Diffusion
 *         Models without Reference", arXiv 2406.06424), the ORPO family: reference-free, the
 *         log-odds approximated from the denoising errors; w = beta_mapo (0.1), s = snr_value (0.2).
 */
const METHODS = {
  dpo: {
    needsReference: true,
    formula: "−log σ(−(β/2)·((Lw − Ll) − (Rw − Rl)))",
    perPair: (terms) => requireInside(terms, "dpo").logSigmoid().neg(),
  },
  sft: {
    needsReference: false,
    formula: "Lw",
    perPair: (terms) => terms.lw.mul(1),
  },
  hinge: {
    needsReference: true,
    formula: "relu(1 − (β/2)·((Rw − Rl) − (Lw − Ll)))",
    perPair: (terms) => requireInside(terms, "hinge").rsub(1).relu(),
  },
  ipo: {
    needsReference: true,
    formula: "(((Rw − Rl) − (Lw − Ll)) − 1/β)²",
    perPair: (terms) => {
      const inside = requireInside(terms, "ipo");
      // logits = inside / (β/2); the IPO target 1/(2β_d) = 1/β.
      return inside.div(terms.beta / 2).sub(1 / terms.beta).square();
    },
  },
  mapo: {
    needsReference: false,
    formula: "Lw − w·log σ(T·(sLw/(e^{sLw} − 1) − sLl/(e^{sLl} − 1)))",
    perPair: (terms, opts) => {
      const w = opts.mapo?.weight ?? 0.1;
      const s = opts.mapo?.snrValue ?? 0.2;
      const T = opts.mapo?.numTrainTimesteps ?? 1000;
      const odds = (l: Tensor): Tensor => {
        const sl = l.mul(s);
        return sl.div(sl.expm1());
      };
      const logOdds = odds(terms.lw).sub(odds(terms.ll));
      return terms.lw.sub(logOdds.mul(T).logSigmoid().mul(w));
    },
  },
} satisfies Record<PreferenceMethod, MethodSpec>;

/** Whether the method's loss needs the frozen reference model (dpo, hinge, ipo). */
export function methodNeedsReference(method: PreferenceMethod): boolean {
  return METHODS[method].needsReference;
}
/** The method's formula in the official β convention (for docs and the CLI's help). */
export function methodFormula(method: PreferenceMethod): string {
  return METHODS[method].formula;
}

/** inside = −(β/2)·((L_w − L_l) − (R_w − R_l)) per pair [N]: the DPO logit, shared by training and evaluation. */
export function insideOf(policy: PolicyErrors, reference: ReferenceErrors, beta: number): Tensor {
  const { lw, ll } = policy;
  const { rw, rl } = reference;
  return lw.sub(ll).sub(rw.sub(rl)).mul(-beta / 2);
}

/**
 * The loss of one batch of pairs from per-sample errors, plus detached metrics.
 * `loss` keeps the autograd graph of `policy`; the reference is treated as a constant.
 */
export function preferenceLoss(method: PreferenceMethod, input: PreferenceInput): PreferenceLossResult {
  const spec = METHODS[method];
  if (spec === undefined) {
    throw new Error(`unknown preference method "${String(method)}"; use one of ${PREFERENCE_METHODS.join(", ")}`);
  }
  const beta = input.beta ?? DEFAULT_BETA;
  if (!(Number.isFinite(beta) && beta > 0)) throw new Error(`beta must be a positive number, got ${beta}`);
  const { lw, ll } = input.policy;
  if (lw.ndim !== 1 || ll.ndim !== 1 || lw.shape[0] !== ll.shape[0]) {
    throw new Error(`preferenceLoss: policy errors must be two [N] tensors, got [${lw.shape.join(", ")}] and [${ll.shape.join(", ")}]`);
  }
  const ref = input.reference;
  if (spec.needsReference && ref === undefined) {
    throw new Error(`preference method "${method}" needs the reference model's errors (reference: {rw, rl})`);
  }
  const terms: Terms = { lw, ll, beta };
  let insidePerPair: Tensor | undefined;
  if (ref !== undefined) {
    const rw = ref.rw.detach();
    const rl = ref.rl.detach();
    terms.rw = rw;
    terms.rl = rl;
    terms.inside = insideOf({ lw, ll }, { rw, rl }, beta);
  }
  const sftWeight = input.sftWeight ?? 0;
  if (!(Number.isFinite(sftWeight) && sftWeight >= 0)) throw new Error(`sftWeight must be a non-negative number, got ${sftWeight}`);
  if (sftWeight > 0 && !spec.needsReference) {
    throw new Error(`sftWeight mixes an SFT term into dpo, hinge or ipo; "${method}" already trains on the chosen image (use sftWeight 0)`);
  }
  const methodPerPair = spec.perPair(terms, input);
  const perPair = sftWeight > 0 ? methodPerPair.add(lw.mul(sftWeight)) : methodPerPair;
  const loss = perPair.mean();
  const metrics = noGrad((): PreferenceMetrics => {
    const chosenMse = lw.detach().mean();
    const rejectedMse = ll.detach().mean();
    const m: PreferenceMetrics = { policyMse: chosenMse.add(rejectedMse).mul(0.5), chosenMse, rejectedMse };
    if (terms.inside !== undefined && terms.rw !== undefined && terms.rl !== undefined) {
      const inside = terms.inside.detach();
      insidePerPair = inside;
      m.inside = inside.mean();
      m.implicitAcc = implicitAccuracy(inside);
      m.referenceMse = terms.rw.mean().add(terms.rl.mean()).mul(0.5);
      m.margin = lw.detach().sub(ll.detach()).sub(terms.rw.sub(terms.rl)).mean();
    }
    return m;
  });
  return { loss, perPair, insidePerPair, metrics };
}

/** mean(inside > 0) + ½·mean(inside = 0): the fraction of pairs the model ranks right. */
export function implicitAccuracy(inside: Tensor): Tensor {
  return noGrad(() => inside.gt(0).float().mean().add(inside.eq(0).float().mean().mul(0.5)));
}
