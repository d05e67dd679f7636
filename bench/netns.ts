// Two "hosts" on one machine: network namespaces joined by a veth pair (host A 10.200.0.1, host B
// 10.200.0.2), for the multi-machine test (test/distributed/two-hosts.test.ts) and the ddp bench's
// all-reduce bandwidth. Names carry the pid, so parallel runs do not collide (each pair has its
// own routing tables, so the same subnet in two pairs is fine). Needs root (CAP_NET_ADMIN) and
// iproute2.
import { execFileSync, spawn } from "node:child_process";

export interface Hosts {
  names: [string, string];
  links: [string, string];
  addrs: [string, string];
  /** Runs `command args` inside host i's namespace; rejects with the end of its stderr when it fails. */
  run(i: number, command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<void>;
  /** Bytes host i sent over its veth end so far. */
  txBytes(i: number): number;
  /** Deletes both namespaces (and with them the veth pair); safe to call twice. */
  remove(): void;
}

function ip(...args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

export function makeHosts(tag = "ddpo"): Hosts {
  const id = process.pid;
  const names: [string, string] = [`${tag}${id}a`, `${tag}${id}b`];
  const links: [string, string] = [`vd${id}a`, `vd${id}b`]; // interface names: at most 15 characters
  const addrs: [string, string] = ["10.200.0.1", "10.200.0.2"];
  const del = (): void => {
    for (const n of names) {
      try {
        ip("netns", "del", n);
      } catch {
        // never created, or already gone
      }
    }
  };
  let removed = false;
  const remove = (): void => {
    if (removed) return;
    removed = true;
    process.removeListener("exit", remove);
    del();
  };
  // a crash or a failed assertion still removes them
  process.once("exit", remove);
  // a namespace with our pid's name can only be a leftover of a killed run whose pid was reused
  del();
  try {
    for (const n of names) ip("netns", "add", n);
    ip("link", "add", links[0], "netns", names[0], "type", "veth", "peer", "name", links[1], "netns", names[1]);
    for (let h = 0; h < 2; h++) {
      ip("-n", names[h]!, "addr", "add", `${addrs[h]}/24`, "dev", links[h]!);
      ip("-n", names[h]!, "link", "set", links[h]!, "up");
      ip("-n", names[h]!, "link", "set", "lo", "up");
    }
  } catch (err) {
    remove();
    const e = err as { stderr?: string; message: string };
    throw new Error(
      `could not create two network namespaces joined by a veth pair (${(e.stderr || e.message).trim()}); ` +
        "this needs root (or CAP_NET_ADMIN) and iproute2 (apt-get install iproute2, as README's Quick start and CI do)",
    );
  }
  const run = (i: number, command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<void> =>
    new Promise((resolve, reject) => {
      const child = spawn("ip", ["netns", "exec", names[i]!, command, ...args], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...env } });
      let tail = "";
      child.stderr.on("data", (d: Buffer) => (tail = (tail + d.toString()).slice(-8192)));
      child.on("error", reject);
      child.on("close", (code, signal) => (code === 0 ? resolve() : reject(new Error(`host ${names[i]}: ${command} ${signal ?? `exited with code ${code}`}\n${tail}`))));
    });
  const txBytes = (i: number): number =>
    Number(execFileSync("ip", ["netns", "exec", names[i]!, "cat", `/sys/class/net/${links[i]}/statistics/tx_bytes`], { encoding: "utf8" }).trim());
  return { names, links, addrs, run, txBytes, remove };
}
