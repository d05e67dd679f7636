// `diffusion-dpo demo`: the whole preference loop on the shipped emoji model (src/demo's runDemo):
// candidate pairs → AI labels → Diffusion-DPO → evaluation against the base → report, all under
// --out. Thin: parse the knobs, call runDemo, draw its events (a progress bar per phase on
// stderr), print the report's path and the headline figures (--json: one object on stdout).
//
// Knobs left unset take the defaults, or, with --resume, the values the run started with.
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";
import { ProgressBar } from "../progress.js";
import { DEFAULT_LR, DEFAULT_SETTINGS as D, EVAL_CAPTIONS, type DemoSettings } from "../../demo/settings.js";

type Args = Record<string, string | boolean | undefined>;

function int(raw: unknown, flag: string, min: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (typeof raw !== "string" || raw.trim() === "" || !Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be an integer ≥ ${min}, got "${String(raw)}"`);
  return n;
}

function num(raw: unknown, flag: string, min: number, strict: boolean): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (typeof raw !== "string" || raw.trim() === "" || !Number.isFinite(n) || n < min || (strict && n === min)) {
    throw new UsageError(`${flag} must be a number ${strict ? ">" : "≥"} ${min}, got "${String(raw)}"`);
  }
  return n;
}

/** The knobs given on the command line (undefined where not given). */
export function settingsFromArgs(a: Args): Partial<DemoSettings> {
  if (a.full === true && a.lora === true) throw new UsageError("--full and --lora disagree; give one");
  const otherRewards = typeof a.otherRewards === "string"
    ? a.otherRewards.split(",").map((s) => s.trim()).filter((s) => s !== "")
    : undefined;
  const s: Partial<DemoSettings> = {
    model: typeof a.model === "string" ? a.model : undefined,
    finetune: a.full === true ? "full" : a.lora === true ? "lora" : undefined,
    pairsPrompts: int(a.pairsPrompts, "--pairs-prompts", 1),
    heldoutPairsPrompts: int(a.heldoutPairsPrompts, "--heldout-pairs-prompts", 1),
    k: int(a.k, "--k", 2),
    sampleSteps: int(a.sampleSteps, "--sample-steps", 1),
    guidance: num(a.guidance, "--guidance", 0, false),
    labelReward: typeof a.reward === "string" ? a.reward : undefined,
    otherRewards,
    steps: int(a.steps, "--steps", 1),
    rounds: int(a.rounds, "--rounds", 1),
    batch: int(a.batch, "--batch", 1),
    beta: num(a.beta, "--beta", 0, true),
    sftWeight: num(a.sftWeight, "--sft-weight", 0, false),
    lr: num(a.lr, "--lr", 0, true),
    warmup: int(a.warmup, "--warmup", 0),
    loraRank: int(a.loraRank, "--lora-rank", 1),
    loraAlpha: num(a.loraAlpha, "--lora-alpha", 0, true),
    promptDropout: num(a.promptDropout, "--prompt-dropout", 0, false),
    evalPrompts: int(a.evalPrompts, "--eval-prompts", 1),
    seeds: int(a.seeds, "--seeds", 1),
    implicitDraws: int(a.draws, "--draws", 1),
    seed: int(a.seed, "--seed", 0),
  };
  if (typeof a.evalCaptions === "string") {
    if (!(EVAL_CAPTIONS as readonly string[]).includes(a.evalCaptions)) throw new UsageError(`--eval-captions ${a.evalCaptions}: use one of ${EVAL_CAPTIONS.join(", ")}`);
    s.evalCaptions = a.evalCaptions as DemoSettings["evalCaptions"];
  }
  if (typeof a.sampler === "string") s.sampler = a.sampler as DemoSettings["sampler"];
  return s;
}

const pct = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? "—" : `${(100 * x).toFixed(1)}%`);

export default defineCommand({
  meta: {
    name: "demo",
    description:
      "The whole preference loop on the shipped emoji model, in about 15 minutes on a laptop CPU: candidate pairs from the base model → " +
      "AI labels (alignment reward) → Diffusion-DPO (LoRA) → win rates vs the base on held-out captions → report.html, all under --out.",
  },
  args: {
    out: { type: "string", description: "Output folder for everything (pairs.sqlite, train/, eval/, report.html, summary.json)", default: "runs/demo" },
    resume: { type: "boolean", description: "Continue the run in --out: finished stages are skipped, training resumes from its latest checkpoint", default: false },
    full: { type: "boolean", description: "Full fine-tuning with a frozen reference copy instead of LoRA (default: LoRA)", default: false },
    lora: { type: "boolean", description: "LoRA fine-tuning, the reference is the same UNet with adapters off (the default)", default: false },
    model: { type: "string", description: `Base model folder (diffusers layout) (default: ${D.model})` },
    pairsPrompts: { type: "string", description: `Training captions to sample candidate pairs for (default: ${D.pairsPrompts})` },
    heldoutPairsPrompts: { type: "string", description: `Held-out captions to sample labelled pairs for, for implicit accuracy (default: ${D.heldoutPairsPrompts})` },
    k: { type: "string", description: `Candidates per caption; every two of them form a pair, K(K−1)/2 per caption (default: ${D.k})` },
    sampleSteps: { type: "string", description: `Sampler steps for the candidates and the evaluation samples (default: ${D.sampleSteps})` },
    sampler: { type: "string", description: `Sampler: ddim | ddpm | euler | euler_ancestral | dpmpp_2m (default: ${D.sampler})` },
    guidance: { type: "string", description: `Classifier-free guidance scale (default: ${D.guidance})` },
    reward: { type: "string", description: `The reward that labels the pairs (default: ${D.labelReward})` },
    otherRewards: { type: "string", description: `Comma-separated rewards that judge the evaluation but did not label (default: ${D.otherRewards.join(",")})` },
    steps: { type: "string", description: `DPO optimizer steps (default: ${D.steps})` },
    rounds: { type: "string", description: `On-policy rounds: each round after the first samples new pairs from the previous round's policy (the next --pairs-prompts training captions), labels them and trains on (default: ${D.rounds})` },
    batch: { type: "string", description: `Pairs per DPO step (default: ${D.batch})` },
    beta: { type: "string", description: `β, official convention: inside = −(β/2)·margin (diffusers' beta_dpo is half) (default: ${D.beta})` },
    sftWeight: { type: "string", description: `λ of an SFT term on the chosen image mixed into the DPO loss, loss + λ·Lw; β/4 weighs it like the DPO term at the start (default: ${D.sftWeight}, the paper's loss)` },
    lr: { type: "string", description: `Learning rate as applied (not scaled by the batch, unlike \`train --lr\`) (default: ${DEFAULT_LR.lora} LoRA, ${DEFAULT_LR.full} full)` },
    warmup: { type: "string", description: `Learning-rate warmup steps (default: ${D.warmup})` },
    loraRank: { type: "string", description: `LoRA rank r (default: ${D.loraRank})` },
    loraAlpha: { type: "string", description: `LoRA α; the update is scaled by α/r (default: ${D.loraAlpha})` },
    promptDropout: { type: "string", description: `Probability of an empty caption per training pair (keeps guidance working) (default: ${D.promptDropout})` },
    evalCaptions: { type: "string", description: `Where evaluation and held-out pair captions come from: heldout-emoji (emoji the base model never saw) | dpo-unseen (pretraining emoji whose captions DPO never trains on, the paper's setting) (default: ${D.evalCaptions})` },
    evalPrompts: { type: "string", description: `Held-out captions the tuned and base models are compared on (default: ${D.evalPrompts})` },
    seeds: { type: "string", description: `Seeds per evaluation caption, the same for both models; ≥ 2 for diversity (default: ${D.seeds})` },
    draws: { type: "string", description: `Random timesteps per held-out pair for implicit accuracy (default: ${D.implicitDraws})` },
    seed: { type: "string", description: `Seed of the caption order, candidate seeds and training (default: ${D.seed})` },
    json: { type: "boolean", description: "Print the summary as one JSON object on stdout", default: false },
  },
  async run({ args, rawArgs }) {
    const settings = settingsFromArgs(args as Args);
    if (settings.sampler !== undefined) {
      const { isSamplerName, SAMPLER_NAMES } = await import("../../diffusion/index.js");
      if (!isSamplerName(settings.sampler)) throw new UsageError(`--sampler ${settings.sampler}: use one of ${SAMPLER_NAMES.join(", ")}`);
    }
    const { runDemo } = await import("../../demo/runDemo.js");
    let bar: ProgressBar | null = null;
    let barLabel = "";
    const endBar = () => {
      bar?.done();
      bar = null;
      barLabel = "";
    };
    const started = performance.now();
    let summary;
    try {
      summary = await runDemo({
        out: args.out, resume: args.resume, settings, command: ["diffusion-dpo", "demo", ...rawArgs].join(" "),
        onEvent: (e) => {
          switch (e.type) {
            case "start":
              process.stderr.write(
                `demo → ${e.out}${e.resumed ? ` (resuming; done: ${e.stagesDone.join(", ") || "none"})` : ""}: ` +
                  `${e.settings.finetune}, β ${e.settings.beta}, lr ${e.settings.lr}, ${e.settings.steps} steps × ${e.settings.batch} pairs\n`,
              );
              break;
            case "stage":
              endBar();
              process.stderr.write(`[${e.index + 1}/${e.count}] ${e.stage}: ${e.title}${e.skipped ? " — done already, skipped" : ""}\n`);
              break;
            case "progress":
              if (bar === null || barLabel !== e.label) {
                endBar();
                bar = new ProgressBar(`  ${e.label}`);
                barLabel = e.label;
              }
              bar.update(e.done, e.total, e.detail ?? "");
              break;
            case "log":
              endBar();
              process.stderr.write(`  ${e.message}\n`);
              break;
            case "stage-done":
              endBar();
              if (!e.skipped) process.stderr.write(`  ${e.stage} done in ${e.seconds.toFixed(1)} s: ${e.headline}\n`);
              break;
            default:
              break;
          }
        },
      });
    } catch (err) {
      endBar();
      const { DemoError } = await import("../../demo/settings.js");
      if (err instanceof DemoError) throw new UsageError(err.message);
      throw err;
    }
    endBar();
    if (args.json) {
      const wall = (performance.now() - started) / 1000;
      process.stdout.write(`${JSON.stringify({ ...summary, wallSeconds: wall }, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v))}\n`);
      return;
    }
    const lines = [`report: ${summary.report}`];
    for (const [name, w] of Object.entries(summary.winRate)) {
      lines.push(`win rate vs base (${name}${name === summary.labelReward ? ", labelled the pairs" : ", did not label"}): ${pct(w.rate)} [${pct(w.interval[0])}, ${pct(w.interval[1])}]  ${w.wins} W / ${w.ties} T / ${w.losses} L of ${w.n}`);
    }
    for (const w of summary.roundWinRates ?? []) {
      lines.push(`  round ${w.round}: ${pct(w.rate)} [${pct(w.interval[0])}, ${pct(w.interval[1])}] under ${summary.labelReward}`);
    }
    const ia = summary.implicitAccuracy;
    if (ia) lines.push(`implicit-reward accuracy: ${pct(ia.accuracy)} [${pct(ia.interval[0])}, ${pct(ia.interval[1])}] on ${ia.pairs} held-out pairs`);
    const d = summary.diversity;
    if (d) lines.push(`diversity: tuned ${d.tuned.toFixed(4)} vs base ${d.base.toFixed(4)} (${d.change >= 0 ? "+" : ""}${pct(d.change)})`);
    lines.push(`stage times: ${Object.entries(summary.stageSeconds).map(([k, v]) => `${k} ${v.toFixed(0)} s`).join(", ")}; total ${summary.totalSeconds.toFixed(0)} s`);
    const missed = summary.targets.filter((t) => !t.met);
    lines.push(missed.length === 0 ? "all target figures met" : `targets missed: ${missed.map((t) => `${t.what} (${t.target})`).join("; ")}`);
    process.stdout.write(`${lines.join("\n")}\n`);
  },
});
