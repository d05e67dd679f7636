// Runs a CLI command in process and captures what it prints. Commands print results on
// process.stdout as strings; the test runner's own reports share process.stdout as binary chunks,
// so only strings are captured and binary chunks are passed on.
import { defineCommand, type CommandDef } from "citty";
import { runCli } from "../../src/cli/run.js";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The last stdout line that is a JSON object (what `--json` prints). */
  json: () => any;
}

/** A `diffusion-dpo` root with just the given sub-commands, and a runner that captures output. */
export function cliRunner(subCommands: Record<string, CommandDef<any>>): (argv: string[]) => Promise<CliResult> {
  const root = defineCommand({ meta: { name: "diffusion-dpo" }, subCommands });
  return async (argv) => {
    let stdout = "";
    let stderr = "";
    const write = process.stdout.write.bind(process.stdout);
    const writeErr = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((t: string | Uint8Array, ...rest: unknown[]) => {
      if (typeof t !== "string") return (write as (...a: unknown[]) => boolean)(t, ...rest);
      stdout += t;
      return true;
    }) as typeof process.stdout.write;
    process.stderr.write = ((t: string | Uint8Array) => { stderr += String(t); return true; }) as typeof process.stderr.write;
    try {
      const code = await runCli(root, argv, { stdout: (t) => { stdout += t; }, stderr: (t) => { stderr += t; } });
      const json = () => JSON.parse(stdout.split("\n").filter((l) => l.startsWith("{")).pop() ?? "null");
      return { code, stdout, stderr, json };
    } finally {
      process.stdout.write = write;
      process.stderr.write = writeErr;
    }
  };
}
