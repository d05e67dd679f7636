// Runs a bench script in a fresh Node process (same loader flags as this one) and reads the JSON
// it writes on stdout; its stderr (progress) passes through. Used where state a process keeps
// (allocator, primitive caches, live tensors) would otherwise leak from one measurement into the next.
import { spawnSync } from "node:child_process";

export function runJsonChild<T>(script: string, args: string[], what: string): T {
  const r = spawnSync(process.execPath, [...process.execArgv, script, ...args], {
    encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 64 * 2 ** 20,
  });
  if (r.status !== 0) throw new Error(`${what} exited with ${r.status ?? r.signal} (its output is above)`);
  return JSON.parse(r.stdout) as T;
}
