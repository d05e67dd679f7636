// The CLI driver: resolves the sub-command, rejects unknown flags, prints usage for --help,
// and turns any error into one or two plain lines on stderr (a stack trace only with --debug).
import { renderUsage, runCommand, type ArgsDef, type CommandDef } from "citty";
import { UsageError } from "./errors.js";

export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const defaultIO: CliIO = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

async function resolve<T>(v: T | Promise<T> | (() => T) | (() => Promise<T>)): Promise<T> {
  return typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;
}

/** Walks the sub-command chain named by the leading positional words. */
async function findCommand(root: CommandDef, argv: string[]): Promise<{ cmd: CommandDef; parent?: CommandDef; rest: string[]; path: string[] }> {
  let cmd = root;
  let parent: CommandDef | undefined;
  let rest = argv;
  const path: string[] = [];
  for (;;) {
    const subs = cmd.subCommands ? await resolve(cmd.subCommands) : undefined;
    const word = rest[0];
    if (!subs || word === undefined || word.startsWith("-")) break;
    const next = subs[word];
    if (next === undefined) {
      throw new UsageError(`unknown command "${[...path, word].join(" ")}". Run with --help to list the commands.`);
    }
    parent = cmd;
    cmd = await resolve(next);
    path.push(word);
    rest = rest.slice(1);
  }
  return { cmd, parent, rest, path };
}

function checkFlags(args: ArgsDef, argv: string[], path: string[]): void {
  const known = new Set<string>(["help", "h", "debug"]);
  for (const [name, def] of Object.entries(args)) {
    known.add(name);
    const kebab = name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    known.add(kebab);
    if (def.type === "boolean") {
      known.add(`no-${name}`);
      known.add(`no-${kebab}`);
    }
    const alias = "alias" in def ? def.alias : undefined;
    for (const a of alias === undefined ? [] : Array.isArray(alias) ? alias : [alias]) known.add(a);
  }
  for (const token of argv) {
    if (token === "--") break;
    if (!token.startsWith("-") || /^-\d/.test(token)) continue;
    const name = token.replace(/^--?/, "").split("=")[0]!;
    if (!known.has(name)) {
      const where = path.length > 0 ? `diffusion-dpo ${path.join(" ")}` : "diffusion-dpo";
      throw new UsageError(`unknown option --${name} for ${where}. Run \`${where} --help\` to list its options.`);
    }
  }
}

export async function runCli(root: CommandDef, argv: string[], io: CliIO = defaultIO): Promise<number> {
  const debug = argv.includes("--debug");
  try {
    if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-v")) {
      const meta = root.meta ? await resolve(root.meta) : undefined;
      io.stdout(`${meta?.version ?? "unknown"}\n`);
      return 0;
    }
    const { cmd, parent, rest, path } = await findCommand(root, argv);
    if (rest.includes("--help") || rest.includes("-h") || (!cmd.run && rest.length === 0)) {
      io.stdout(`${await renderUsage(cmd, parent)}\n`);
      return 0;
    }
    if (!cmd.run) throw new UsageError(`"${[...path].join(" ") || "diffusion-dpo"}" needs a command. Run with --help to list them.`);
    const args = cmd.args ? await resolve(cmd.args) : {};
    checkFlags(args, rest, path);
    await runCommand(cmd, { rawArgs: rest.filter((a) => a !== "--debug") });
    return 0;
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    io.stderr(`error: ${e.message}\n`);
    if (debug && e.stack) io.stderr(`${e.stack}\n`);
    else if (!(e instanceof UsageError)) io.stderr("(run again with --debug for a stack trace)\n");
    return 1;
  }
}
