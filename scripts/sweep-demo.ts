// Trains several DPO settings on one finished demo run's pairs and writes one comparison table.
// The pairs and labels are reused (they depend on the base model, not on the training knobs), so
// each setting costs only its training and evaluation.
//
//   node --import tsx scripts/sweep-demo.ts --from runs/demo --out runs/sweep \
//     --set "beta=2000" --set "lr=0.003" --set "beta=2000,loraRank=16,steps=600"
//
// Each --set is a comma-separated list of demo knobs (the `diffusion-dpo demo` flags in camelCase:
// beta, sftWeight, lr, warmup, steps, batch, loraRank, loraAlpha, promptDropout, finetune). Writes
// <out>/<name>/ (a demo run resumed after its label stage) and <out>/sweep.md + sweep.json.
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    from: { type: "string" },
    out: { type: "string", default: "runs/sweep" },
    set: { type: "string", multiple: true, default: [] },
  },
});
if (!values.from || !existsSync(join(values.from, "demo.json"))) {
  console.error("--from must be a finished demo run (with demo.json, pairs.sqlite, heldout-pairs.sqlite)");
  process.exit(2);
}
const from = values.from;
const sets = values.set!.length > 0 ? values.set! : ["beta=5000"];
mkdirSync(values.out!, { recursive: true });

interface Row { name: string; knobs: Record<string, string>; seconds: number; summary: Record<string, unknown> | null; error?: string }
const rows: Row[] = [];
for (const set of sets) {
  const knobs = Object.fromEntries(set.split(",").map((kv) => kv.split("=").map((s) => s.trim()) as [string, string]));
  const name = Object.entries(knobs).map(([k, v]) => `${k}-${v}`).join("_");
  const dir = join(values.out!, name);
  rmSync(dir, { recursive: true, force: true });
  cpSync(from, dir, { recursive: true });
  // keep the pairs and label stages; train, eval and report run again with the new knobs
  for (const f of ["stages/train.json", "stages/eval.json", "stages/report.json", "train", "eval", "report.html", "summary.json"]) {
    rmSync(join(dir, f), { recursive: true, force: true });
  }
  if (knobs["finetune"] !== undefined && knobs["finetune"] !== "lora" && knobs["finetune"] !== "full") {
    console.error(`--set ${set}: finetune must be lora or full`);
    process.exit(2);
  }
  // the demo's CLI spells the fine-tuning mode --full / --lora
  const flags = Object.entries(knobs).flatMap(([k, v]) => (k === "finetune" ? [`--${v}`] : [`--${k}`, v]));
  const started = performance.now();
  const r = spawnSync(process.execPath, ["--import", "tsx", "src/cli/main.ts", "demo", "--resume", "--out", dir, ...flags, "--json"], {
    encoding: "utf8", stdio: ["ignore", "pipe", "inherit"],
  });
  const seconds = (performance.now() - started) / 1000;
  const summaryPath = join(dir, "summary.json");
  rows.push({
    name, knobs, seconds,
    summary: r.status === 0 && existsSync(summaryPath) ? JSON.parse(readFileSync(summaryPath, "utf8")) as Record<string, unknown> : null,
    ...(r.status !== 0 ? { error: `exit ${r.status}` } : {}),
  });
  writeFileSync(join(values.out!, "sweep.json"), `${JSON.stringify(rows, null, 1)}\n`);
}

type Rate = { rate: number; interval: [number, number] };
const pct = (x: number | undefined) => (x === undefined ? "—" : `${(100 * x).toFixed(1)}%`);
const rate = (r: Rate | undefined) => (r === undefined ? "—" : `${pct(r.rate)} [${pct(r.interval[0])}, ${pct(r.interval[1])}]`);
const lines = [
  `# Sweep over ${from}`, "",
  "| setting | win rate per reward | implicit acc. (held-out) | diversity vs base | train + eval time |",
  "|---|---|---|---|---|",
];
for (const row of rows) {
  const s = row.summary as { winRate?: Record<string, Rate>; implicitAccuracy?: { accuracy?: number; rate?: number }; diversity?: { change?: number } } | null;
  const wins = s?.winRate ? Object.entries(s.winRate).map(([k, v]) => `${k} ${rate(v)}`).join("; ") : row.error ?? "—";
  const acc = s?.implicitAccuracy?.accuracy ?? s?.implicitAccuracy?.rate;
  lines.push(`| ${row.name} | ${wins} | ${pct(acc)} | ${s?.diversity?.change === undefined ? "—" : pct(s.diversity.change)} | ${Math.round(row.seconds)} s |`);
}
writeFileSync(join(values.out!, "sweep.md"), `${lines.join("\n")}\n`);
process.stdout.write(`${lines.join("\n")}\n`);
