// A local launcher like torchrun's: starts N worker processes with MASTER_ADDR, MASTER_PORT,
// RANK, WORLD_SIZE and LOCAL_RANK set, and ends the whole job — naming the rank — as soon as one
// worker fails, so a dead rank never leaves the others hanging in a collective.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { PEER_FAILURE_EXIT_CODE } from "./process-group.js";

export interface LaunchOptions {
  nproc: number;
  /** Command and arguments of each worker (default: this same node program and arguments). */
  command?: string;
  args: string[];
  masterAddr?: string;
  masterPort?: number;
  /** Number of the first rank on this machine (multi-machine: nodeRank × nproc). */
  rankOffset?: number;
  worldSize?: number;
  /** Threads per worker (OMP_NUM_THREADS-like; passed as DDPO_THREADS). */
  threadsPerWorker?: number;
  env?: NodeJS.ProcessEnv;
  /**
   * Where workers' stdout/stderr go: inherited by default; "pipe" drains them and keeps the end of
   * each worker's stderr for WorkerFailedError.stderr.
   */
  stdio?: "inherit" | "pipe";
  onExit?: (rank: number, code: number | null, signal: NodeJS.Signals | null) => void;
}

export class WorkerFailedError extends Error {
  /** The end of the worker's stderr (with stdio: "pipe"). */
  stderr = "";
  constructor(readonly rank: number, readonly code: number | null, readonly signal: NodeJS.Signals | null) {
    super(`worker rank ${rank} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}; the other workers were stopped`);
    this.name = "WorkerFailedError";
  }
}

const STDERR_TAIL = 8192;

/** A free TCP port on the loopback interface. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export async function launchLocal(opts: LaunchOptions): Promise<void> {
  if (!Number.isInteger(opts.nproc) || opts.nproc < 1) throw new Error(`--nproc must be a positive integer, got ${opts.nproc}`);
  const masterPort = opts.masterPort ?? (await freePort());
  const masterAddr = opts.masterAddr ?? "127.0.0.1";
  const worldSize = opts.worldSize ?? opts.nproc;
  const offset = opts.rankOffset ?? 0;
  const command = opts.command ?? process.execPath;
  const children: ChildProcess[] = [];
  return new Promise<void>((resolve, reject) => {
    let remaining = opts.nproc;
    let failed = false;
    const failures: WorkerFailedError[] = [];
    // A dead rank makes its peers fail too, sometimes sooner than its own exit is seen: collect
    // failures for a moment and blame the first that was not a peer failure.
    const settle = () => {
      const root = failures.find((f) => f.code !== PEER_FAILURE_EXIT_CODE) ?? failures[0]!;
      reject(root);
    };
    const stopAll = () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
      setTimeout(() => {
        for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      }, 5000).unref();
    };
    for (let local = 0; local < opts.nproc; local++) {
      const rank = offset + local;
      const child = spawn(command, opts.args, {
        stdio: opts.stdio ?? "inherit",
        env: {
          ...process.env,
          ...opts.env,
          MASTER_ADDR: masterAddr,
          MASTER_PORT: String(masterPort),
          RANK: String(rank),
          LOCAL_RANK: String(local),
          WORLD_SIZE: String(worldSize),
          // as torchrun sets OMP_NUM_THREADS: BLAS thread pools of N workers must not oversubscribe the cores
          ...(opts.threadsPerWorker
            ? { DDPO_THREADS: String(opts.threadsPerWorker), OMP_NUM_THREADS: String(opts.threadsPerWorker), OPENBLAS_NUM_THREADS: String(opts.threadsPerWorker) }
            : {}),
        },
      });
      children.push(child);
      let tail = "";
      child.stdout?.resume();
      child.stderr?.on("data", (d: Buffer) => {
        tail = (tail + d.toString("utf8")).slice(-STDERR_TAIL);
      });
      child.on("close", (code, signal) => {
        opts.onExit?.(rank, code, signal);
        remaining--;
        if (code !== 0 || signal !== null) {
          const wasKilledByUs = failed && signal !== null;
          if (!wasKilledByUs) {
            const err = new WorkerFailedError(rank, code, signal);
            err.stderr = tail;
            failures.push(err);
          }
          if (!failed) {
            failed = true;
            setTimeout(() => {
              stopAll();
              settle();
            }, 1500);
          }
          return;
        }
        if (remaining === 0 && !failed) resolve();
      });
      child.on("error", (err) => {
        if (!failed) {
          failed = true;
          stopAll();
          reject(new Error(`could not start worker rank ${rank}: ${err.message}`));
        }
      });
    }
  });
}
