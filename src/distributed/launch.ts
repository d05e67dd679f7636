// A launcher like torchrun's: starts this machine's N worker processes with MASTER_ADDR,
// MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and NODE_RANK (GROUP_RANK) set, and
// ends the whole local job — naming the rank — as soon as one worker fails, so a dead rank never
// leaves the others hanging in a collective. Several machines (torchrun's --nnodes/--node-rank):
// run one launcher per machine with the same nnodes, masterAddr (node 0's address, reachable from
// every node) and masterPort; node k's workers are ranks k·nproc … k·nproc + nproc − 1.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { PEER_FAILURE_EXIT_CODE } from "./process-group.js";

export interface LaunchOptions {
  nproc: number;
  /** Command and arguments of each worker (default: this same node program and arguments). */
  command?: string;
  args: string[];
  /** Node 0's address; required when nnodes > 1 (default 127.0.0.1). */
  masterAddr?: string;
  /** Required when nnodes > 1 (default: a free port on this machine). */
  masterPort?: number;
  /** Machines taking part, each running one launcher (torchrun's --nnodes; default 1). */
  nnodes?: number;
  /** This machine's index in [0, nnodes) (torchrun's --node-rank; default 0). */
  nodeRank?: number;
  /** Number of the first rank on this machine (default nodeRank × nproc). */
  rankOffset?: number;
  /** Default nnodes × nproc. */
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
  const nnodes = opts.nnodes ?? 1;
  const nodeRank = opts.nodeRank ?? 0;
  if (!Number.isInteger(nnodes) || nnodes < 1) throw new Error(`--nnodes must be a positive integer, got ${nnodes}`);
  if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new Error(`--node-rank must be an integer in [0, ${nnodes}) (the --nnodes machines are numbered from 0), got ${nodeRank}`);
  if (nnodes > 1 && (opts.masterAddr === undefined || opts.masterPort === undefined)) {
    throw new Error("--nnodes > 1 needs --master-addr (node 0's address, reachable from every machine) and --master-port (the same on every machine)");
  }
  const masterPort = opts.masterPort ?? (await freePort());
  const masterAddr = opts.masterAddr ?? "127.0.0.1";
  const worldSize = opts.worldSize ?? nnodes * opts.nproc;
  const offset = opts.rankOffset ?? nodeRank * opts.nproc;
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
          LOCAL_WORLD_SIZE: String(opts.nproc),
          NODE_RANK: String(nodeRank),
          GROUP_RANK: String(nodeRank),
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
