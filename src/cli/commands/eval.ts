// `diffusion-dpo eval`: the tuned model against its base — reward win rates (same seeds, sampler,
// steps and guidance), implicit-reward accuracy on held-out pairs, diversity, an optional best-of-n
// baseline — written to <out>/eval.json, <out>/report.html and <out>/images/. Thin: parse flags,
// call src/eval's evaluate(), draw its events.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";
import { ProgressBar } from "../progress.js";

function int(raw: string | undefined, flag: string, min: number): number {
  const n = Number(raw);
  if (raw === undefined || raw.trim() === "" || !Number.isInteger(n) || n < min) {
    throw new UsageError(`${flag} must be an integer ≥ ${min}, got "${raw}"`);
  }
  return n;
}

function num(raw: string | undefined, flag: string, check: (n: number) => boolean, what: string): number {
  const n = Number(raw);
  if (raw === undefined || raw.trim() === "" || !Number.isFinite(n) || !check(n)) throw new UsageError(`${flag} must be ${what}, got "${raw}"`);
  return n;
}

const PHASE_LABEL: Record<string, string> = {
  "sample-base": "base samples ",
  "sample-tuned": "tuned samples",
  score: "scoring      ",
  "best-of-n": "best-of-n    ",
  implicit: "implicit acc ",
  write: "writing      ",
};

/** The run folder to draw curves from when --run is not given: a folder with metrics.jsonl at or above --tuned. */
function guessRun(tuned: string): string | undefined {
  let dir = existsSync(tuned) && !tuned.endsWith(".safetensors") ? tuned : dirname(tuned);
  for (let i = 0; i < 3; i++) {
    if (existsSync(join(dir, "metrics.jsonl"))) return dir;
    dir = dirname(dir);
  }
  return undefined;
}

export default defineCommand({
  meta: {
    name: "eval",
    description: "Compare a tuned model with its base: reward win rates, implicit accuracy, diversity, best-of-n; writes eval.json + report.html.",
  },
  args: {
    base: { type: "string", description: "The base model folder (diffusers layout)", default: "models/emoji-base" },
    tuned: { type: "string", description: "The tuned model: a model folder, a training run folder (final/ or latest checkpoint), a LoRA folder or .safetensors file (required)" },
    prompts: { type: "string", description: "Prompt file: one prompt per line, or a TSV with Prompt and Category columns (PartiPrompts) (required)" },
    limit: { type: "string", description: "Use at most N prompts, spread over categories (0: all)", default: "0" },
    seeds: { type: "string", description: "Seeds per prompt (seed-start … seed-start+N−1), the same for base and tuned", default: "1" },
    seedStart: { type: "string", description: "First seed", default: "0" },
    sampler: { type: "string", description: "Sampler: ddim | ddpm | euler | euler_ancestral | dpmpp_2m (default: the base folder's scheduler class, as in diffusers)" },
    steps: { type: "string", description: "Sampling steps", default: "25" },
    guidance: { type: "string", description: "Classifier-free guidance scale (≤ 1: off)", default: "3" },
    reward: { type: "string", description: "Judging reward(s), comma-separated: alignment | appeal | category | a reward folder | clip=PATH | pickscore=PATH | hpsv2=PATH | aesthetic=PATH | a weighted mix 0.7*pickscore=PATH+0.3*aesthetic=PATH", default: "alignment" },
    tieMargin: { type: "string", description: "A comparison is a tie when |score(tuned) − score(base)| ≤ this", default: "0" },
    bootstrap: { type: "string", description: "Bootstrap replicates for the win-rate interval (resampling prompts)", default: "2000" },
    bestOfN: { type: "string", description: "Best-of-n baseline up to this n (1, 2, 4, …; extra base samples per prompt); 0: off", default: "0" },
    pairs: { type: "string", description: "Held-out preference pairs for implicit-reward accuracy (parquet, w/+l/ folder, .jsonl, SQLite store); none: skipped" },
    pairsFormat: { type: "string", description: "Force the pairs' format: pickapic | folder | jsonl | sqlite (default: detected)" },
    pairsLimit: { type: "string", description: "Use at most N pairs (0: all)", default: "200" },
    draws: { type: "string", description: "Random timesteps per pair for implicit accuracy (the paper: 10)", default: "10" },
    beta: { type: "string", description: "β (official convention) for the reported mean inside; the accuracy does not depend on it", default: "5000" },
    run: { type: "string", description: "Training run folder or metrics .jsonl for the report's curves and config (default: found at or above --tuned)" },
    out: { type: "string", description: "Output folder: eval.json, report.html, images/", default: "runs/eval" },
    human: { type: "string", description: "Blind A/B human-eval votes (serve --eval) to merge into the report (default: <out>/human.sqlite when present)" },
    reportOnly: { type: "boolean", description: "Only re-render <out>/report.html from <out>/eval.json and the human votes (no sampling; --tuned, --prompts not needed)", default: false },
    embedImages: { type: "boolean", description: "Embed the images in report.html as data URIs (--no-embed-images: link images/ beside it)", default: true },
    batch: { type: "string", description: "Images per sampling / scoring batch", default: "16" },
    size: { type: "string", description: "Sample side in pixels for SD3 / Flux folders (0: the model's default, SD3 sample_size × 8, Flux 1024)", default: "0" },
    json: { type: "boolean", description: "Print the summary as one JSON object on stdout", default: false },
  },
  async run({ args }) {
    if (args.human !== undefined && !existsSync(args.human)) throw new UsageError(`--human ${args.human}: no such file; give the human.sqlite that \`diffusion-dpo serve --eval\` wrote`);
    if (args.reportOnly) {
      const { reportOnly } = await import("../human-report.js");
      await reportOnly({ out: args.out, human: args.human, embedImages: args.embedImages, json: args.json });
      return;
    }
    if (args.tuned === undefined) throw new UsageError("--tuned is required: a tuned model folder, training run folder or LoRA .safetensors file");
    if (args.prompts === undefined) throw new UsageError("--prompts is required: a prompt file (one per line) or a PartiPrompts-style TSV");
    if (!existsSync(args.base)) throw new UsageError(`--base ${args.base}: no such model folder`);
    if (!existsSync(args.tuned)) throw new UsageError(`--tuned ${args.tuned}: no such file or folder`);
    if (!existsSync(args.prompts)) throw new UsageError(`--prompts ${args.prompts}: no such file`);
    if (args.pairs !== undefined && !existsSync(args.pairs) && !args.pairs.includes("*")) throw new UsageError(`--pairs ${args.pairs}: no such file or folder`);
    const { isSamplerName, SAMPLER_NAMES } = await import("../../diffusion/index.js");
    if (args.sampler !== undefined && !isSamplerName(args.sampler)) throw new UsageError(`--sampler ${args.sampler}: use one of ${SAMPLER_NAMES.join(", ")}`);
    const limit = int(args.limit, "--limit", 0);
    const nSeeds = int(args.seeds, "--seeds", 1);
    const seedStart = int(args.seedStart, "--seed-start", 0);
    const steps = int(args.steps, "--steps", 1);
    const guidance = num(args.guidance, "--guidance", (n) => n >= 0, "a number ≥ 0");
    const tieMargin = num(args.tieMargin, "--tie-margin", (n) => n >= 0, "a number ≥ 0");
    const bootstrap = int(args.bootstrap, "--bootstrap", 1);
    const bestOfN = int(args.bestOfN, "--best-of-n", 0);
    const pairsLimit = int(args.pairsLimit, "--pairs-limit", 0);
    const draws = int(args.draws, "--draws", 1);
    const beta = num(args.beta, "--beta", (n) => n > 0, "a positive number");
    const batchSize = int(args.batch, "--batch", 1);
    const size = int(args.size, "--size", 0);
    const rewardNames = args.reward.split(",").map((s) => s.trim()).filter((s) => s !== "");
    if (rewardNames.length === 0) throw new UsageError("--reward needs at least one reward name");
    const formats = ["pickapic", "folder", "jsonl", "sqlite"] as const;
    type Format = (typeof formats)[number];
    if (args.pairsFormat !== undefined && !formats.includes(args.pairsFormat as Format)) {
      throw new UsageError(`--pairs-format ${args.pairsFormat}: use one of ${formats.join(", ")}`);
    }
    const runPath = args.run ?? guessRun(args.tuned);
    if (args.run !== undefined && !existsSync(args.run)) throw new UsageError(`--run ${args.run}: no such folder or file`);

    const { readPrompts, selectPrompts } = await import("../../eval/prompts.js");
    const { loadEvalModels } = await import("../../eval/flow-models.js");
    const { evaluate } = await import("../../eval/evaluate.js");
    const { readRunLog } = await import("../../eval/runLog.js");
    const { loadReward } = await import("../../feedback/registry.js");

    let prompts;
    try {
      prompts = selectPrompts(readPrompts(args.prompts), limit === 0 ? undefined : limit);
    } catch (err) {
      throw new UsageError(`--prompts: ${(err as Error).message}`);
    }
    const rewards = rewardNames.map((name) => {
      try {
        return loadReward(name);
      } catch (err) {
        throw new UsageError(`--reward ${name}: ${(err as Error).message}`);
      }
    });
    const run = runPath === undefined ? undefined : { path: runPath, log: readRunLog(runPath) };
    const models = loadEvalModels(args.base, args.tuned, { size: size === 0 ? undefined : size });
    let bar: ProgressBar | null = null;
    try {
      const flow = models.defaultSampler() === "flow_match_euler";
      if (flow && args.sampler !== undefined) throw new UsageError("--sampler is not supported for SD3 / Flux folders (they sample with FlowMatch Euler)");
      const result = await evaluate({
        models, prompts, promptSource: args.prompts, seeds: Array.from({ length: nSeeds }, (_, i) => seedStart + i),
        sampler: args.sampler !== undefined && isSamplerName(args.sampler) ? args.sampler : models.defaultSampler(), steps, guidance, rewards, tieMargin, bootstrap, bestOfN,
        pairs: args.pairs === undefined ? undefined : {
          spec: args.pairs, limit: pairsLimit === 0 ? undefined : pairsLimit, batchSize,
          open: args.pairsFormat === undefined ? undefined : { format: args.pairsFormat as Format },
        },
        implicitDraws: draws, beta, run, outDir: args.out, embedImages: args.embedImages, batchSize, human: args.human,
        onEvent: (e) => {
          if (e.type === "phase") {
            bar?.done();
            bar = new ProgressBar(PHASE_LABEL[e.phase] ?? e.phase);
          } else if (e.type === "progress") {
            bar?.update(e.done, e.total, e.detail ?? "");
          }
        },
      });
      (bar as ProgressBar | null)?.done();
      const s = result.summary;
      if (args.json) {
        const summary = { ...s, out: args.out, evalJson: join(args.out, "eval.json"), report: join(args.out, "report.html") };
        process.stdout.write(`${JSON.stringify(summary, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v))}\n`);
        return;
      }
      const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : "—");
      const lines: string[] = [];
      for (const w of Object.values(s.winRate)) {
        lines.push(`win rate (${w.reward})  ${pct(w.rate)} [${pct(w.interval[0])}, ${pct(w.interval[1])}]  ${w.wins} W / ${w.ties} T / ${w.losses} L of ${w.n}`);
      }
      const num = (m: { mean: number; interval: [number, number] }) => `${m.mean.toPrecision(4)} [${m.interval[0].toPrecision(4)}, ${m.interval[1].toPrecision(4)}]`;
      for (const [name, m] of Object.entries(s.meanScores ?? {})) lines.push(`mean score (${name})  base ${num(m.base)}  tuned ${num(m.tuned)}  Δ ${num(m.delta)}`);
      if (s.implicitAccuracy) {
        const a = s.implicitAccuracy;
        lines.push(`implicit accuracy    ${pct(a.accuracy)} [${pct(a.interval[0])}, ${pct(a.interval[1])}]  ${a.pairs} pairs × ${a.draws} timesteps`);
      }
      if (s.diversity) lines.push(`diversity            tuned ${s.diversity.tuned.toFixed(4)} vs base ${s.diversity.base.toFixed(4)}  (tuned↔base ${s.diversity.tunedToBase.toFixed(4)})`);
      for (const [name, b] of Object.entries(s.bestOfN ?? {})) {
        lines.push(`best-of-n (${name})  ${b.points.map((p) => `n=${p.n} ${pct(p.winRate.rate)}`).join(", ")} → ${b.matchN === null ? "no n matches the tuned model" : `n = ${b.matchN} matches`}`);
      }
      lines.push(`wrote ${join(args.out, "eval.json")} and ${join(args.out, "report.html")}`);
      process.stdout.write(`${lines.join("\n")}\n`);
    } finally {
      models.dispose();
      for (const r of rewards) r.dispose?.();
    }
  },
});
