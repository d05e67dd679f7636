// `npm run bench` — node --import tsx bench/run.ts [--json] [--quick] [--only name] [--threads n]
// Runs every case exported by bench/cases/*.ts (any exported object with a `run` function), each
// beside PyTorch doing the same work in the same run with the same thread count, and prints a
// table (or, with --json, one JSON object on stdout; progress always goes to stderr).
//
// Each case runs in a process of its own: run in one process, earlier cases left their state
// behind (the allocator's high-water mark, V8's heap, libtorch's caches) and a later case's DPO
// step came out at 1692 ms instead of 931 ms, holding 71.6 MiB instead of 29.2 MiB.
import { readdirSync } from "node:fs";
import { availableParallelism, cpus, totalmem } from "node:os";
import { spawnSync } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { join, resolve } from "node:path";
import type { BenchCase, BenchResult } from "./types.js";
import { runJsonChild } from "./child.js";
import { getNumThreads, setNumThreads } from "../src/tensor/index.js";
import { peakGflops } from "./cases/engine.js";

interface Args { json: boolean; quick: boolean; only: string[]; threads: number; child: string | null }

function parseArgs(argv: string[]): Args {
  const args: Args = { json: false, quick: false, only: [], threads: availableParallelism(), child: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--json") args.json = true;
    else if (a === "--quick") args.quick = true;
    else if (a === "--child") {
      // internal: run the one case named and print its results as JSON
      args.child = argv[++i] ?? null;
    } else if (a === "--only" || a === "--threads") {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      if (a === "--only") args.only.push(v);
      else {
        args.threads = Number(v);
        if (!Number.isInteger(args.threads) || args.threads < 1) throw new Error(`--threads must be a positive integer, got ${v}`);
      }
    } else if (a.startsWith("--only=")) args.only.push(a.slice(7));
    else if (a.startsWith("--threads=")) args.threads = Number(a.slice(10));
    else if (a === "--help" || a === "-h") {
      process.stderr.write("usage: npm run bench -- [--json] [--quick] [--only <case name substring>] [--threads n]\n");
      process.exit(0);
    } else throw new Error(`unknown option ${a} (known: --json, --quick, --only NAME, --threads N)`);
  }
  return args;
}

function isCase(v: unknown): v is BenchCase {
  return typeof v === "object" && v !== null && typeof (v as BenchCase).run === "function" && typeof (v as BenchCase).name === "string";
}

/** Every BenchCase exported by bench/cases/*.ts, in file order. */
export async function collectCases(): Promise<BenchCase[]> {
  const dir = fileURLToPath(new URL("./cases/", import.meta.url));
  const found: BenchCase[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")).sort()) {
    const mod = (await import(pathToFileURL(join(dir, file)).href)) as Record<string, unknown>;
    for (const value of Object.values(mod)) if (isCase(value) && !found.includes(value)) found.push(value);
  }
  return found;
}

function torchVersion(): string | null {
  const res = spawnSync("/usr/bin/python3", ["-c", "import torch; print(torch.__version__)"], { encoding: "utf8" });
  return res.status === 0 ? res.stdout.trim() : null;
}

function fmt(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "—";
  if (v >= 1000) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toPrecision(3);
}

function table(results: (BenchResult & { case: string })[]): string {
  const rows = [["case", "ours", "PyTorch", "unit", "ratio", "ratio per round: median [range], rounds", "%peak"]];
  for (const r of results) {
    const s = r.ratioSpread;
    rows.push([
      r.name, fmt(r.ours), fmt(r.reference), r.unit,
      r.ratio === undefined ? "—" : `${r.ratio.toFixed(2)}×`,
      s === undefined ? "—" : `${s.median.toFixed(2)}× [${s.min.toFixed(2)}, ${s.max.toFixed(2)}], ${s.rounds}`,
      r.peakFraction === undefined ? "—" : `${(100 * r.peakFraction).toFixed(1)}%`,
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((cell, c) => (c === 0 || c === 3 || c === 5 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ");
  const out = [line(rows[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...rows.slice(1).map(line)];
  const notes = results.filter((r) => r.note).map((r) => `  ${r.name}: ${r.note}`);
  return out.join("\n") + (notes.length ? `\n\nnotes:\n${notes.join("\n")}` : "") + "\n";
}

/**
 * Puts sampler overhead in proportion: each sampler step's fixed cost as a fraction of one no-grad
 * forward of the bench's small UNet (when both cases ran).
 */
function relateSamplerToUnet(results: (BenchResult & { case: string })[]): void {
  const unet = results.find((r) => r.name.startsWith("UNet forward"));
  if (!unet || !(unet.ours > 0)) return;
  const unetSeconds = 1 / unet.ours;
  for (const r of results) {
    if (r.case !== "sampler" || r.unit !== "steps/s" || !(r.ours > 0)) continue;
    const pct = (100 * (1 / r.ours)) / unetSeconds;
    r.note = `${r.note ? `${r.note}; ` : ""}${pct.toFixed(2)}% of one small-UNet forward ([16,3,32,32], ${(unetSeconds * 1e3).toFixed(0)} ms)`;
  }
}

/** One case in a fresh process (this file with --child), its results read from the child's stdout. */
function runCaseInChild(name: string, args: Args): BenchResult[] {
  const argv = ["--child", name, "--threads", String(args.threads), ...(args.quick ? ["--quick"] : [])];
  return runJsonChild<BenchResult[]>(fileURLToPath(import.meta.url), argv, `bench case ${name}`);
}

async function runChild(name: string, args: Args): Promise<void> {
  setNumThreads(args.threads);
  const c = (await collectCases()).find((k) => k.name === name);
  if (c === undefined) throw new Error(`no bench case named ${name}`);
  process.stdout.write(JSON.stringify(await c.run({ quick: args.quick, threads: args.threads })));
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.child !== null) return runChild(args.child, args);
  setNumThreads(args.threads);
  const all = await collectCases();
  // --only NAME: the case of that exact name, else every case whose name contains NAME
  const picks = (c: BenchCase, o: string) => (all.some((k) => k.name === o) ? c.name === o : c.name.includes(o));
  const cases = all.filter((c) => args.only.length === 0 || args.only.some((o) => picks(c, o)));
  if (cases.length === 0) throw new Error(`no bench case matches --only ${args.only.join(", ")}`);
  const cpu = cpus()[0];
  const machine = {
    cpu: cpu?.model ?? "unknown",
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    torch: torchVersion(),
    peakGflops: peakGflops(args.threads),
    platform: `${process.platform}-${process.arch}`,
  };
  const results: (BenchResult & { case: string })[] = [];
  for (const c of cases) {
    process.stderr.write(`bench: ${c.name}${args.quick ? " (quick)" : ""} ...\n`);
    const t0 = Date.now();
    for (const r of runCaseInChild(c.name, args)) results.push({ case: c.name, ...r });
    process.stderr.write(`bench: ${c.name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  relateSamplerToUnet(results);
  const header = `${machine.cpu}, ${args.threads} thread(s), fp32 peak ${machine.peakGflops} GFLOP/s; PyTorch ${machine.torch ?? "not found"}\n\n`;
  if (args.json) {
    // The table still goes to stderr with the progress; stdout holds only the JSON object.
    process.stderr.write(header + table(results));
    process.stdout.write(JSON.stringify({ machine, threads: getNumThreads(), quick: args.quick, results }) + "\n");
  } else process.stdout.write(header + table(results));
}

// Run only as the entry point (tests import collectCases without starting the bench).
const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(resolve(entry)).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
