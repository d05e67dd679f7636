#!/usr/bin/env node
// The `diffusion-dpo` command. Sub-commands load lazily so `--help` stays instant.
import { defineCommand } from "citty";
import { readFileSync } from "node:fs";
import { runCli } from "./run.js";
import { commands } from "./commands/index.js";

function packageVersion(): string {
  for (const rel of ["../../package.json", "../../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "diffusion-dpo" && pkg.version) return pkg.version;
    } catch {
      // try the next location (src/ under tsx vs dist/src/ when compiled)
    }
  }
  return "unknown";
}

export const rootCommand = defineCommand({
  meta: {
    name: "diffusion-dpo",
    version: packageVersion(),
    description: "Align text-to-image diffusion models to preferences with Diffusion-DPO (Wallace et al., 2023).",
  },
  subCommands: commands,
});

// DDPO_THREADS=N sets libtorch's intra-op threads (then OMP_NUM_THREADS, then the CPUs this process
// may use, capped by a cgroup quota: src/tensor/threads.ts, applied when the binding loads). One
// thread per job is much faster when several CPU jobs share the cores (competing OpenMP threads spin).
// Checked here first (the same policy, without loading the binding) so a bad value is a one-line
// error rather than a failed import.
try {
  const { defaultThreadChoice } = await import("../tensor/threads.js");
  defaultThreadChoice();
} catch (err) {
  process.stderr.write(`error: ${(err as Error).message}\n`);
  process.exit(2);
}

const code = await runCli(rootCommand, process.argv.slice(2));
process.exitCode = code;
