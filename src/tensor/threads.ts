// How many intra-op threads libtorch gets when the binding loads. In order: DDPO_THREADS (the
// project's own switch), OMP_NUM_THREADS (what OpenMP programs and PyTorch honour), else the CPUs
// this process may actually use: its affinity mask (os.availableParallelism) capped by a cgroup
// CPU quota (a container limited to 2 CPUs on a 64-core host must not start 64 threads, which
// oversubscribes the quota and runs several times slower).
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

export interface ThreadSources {
  env: Record<string, string | undefined>;
  /** CPUs in the affinity mask. */
  cpus: number;
  /** The cgroup CPU limit in CPUs (quota / period), or null for none. */
  cgroupCpus: number | null;
}

export interface ThreadChoice {
  threads: number;
  source: "DDPO_THREADS" | "OMP_NUM_THREADS" | "cgroup quota" | "cpu affinity";
}

function positiveInteger(value: string, name: string): number {
  const n = Number(value.trim());
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${value}"`);
  return n;
}

export function chooseThreadCount(src: ThreadSources): ThreadChoice {
  const own = src.env.DDPO_THREADS;
  if (own !== undefined && own.trim() !== "") return { threads: positiveInteger(own, "DDPO_THREADS"), source: "DDPO_THREADS" };
  const omp = src.env.OMP_NUM_THREADS;
  // OpenMP allows a list ("4,2" for nested levels); the first entry is the outer level.
  if (omp !== undefined && omp.trim() !== "") return { threads: positiveInteger(omp.split(",")[0]!, "OMP_NUM_THREADS"), source: "OMP_NUM_THREADS" };
  const cpus = Math.max(1, src.cpus);
  if (src.cgroupCpus !== null && src.cgroupCpus < cpus) return { threads: Math.max(1, Math.ceil(src.cgroupCpus)), source: "cgroup quota" };
  return { threads: cpus, source: "cpu affinity" };
}

/** Parses cgroup v2 `cpu.max` ("max 100000" or "200000 100000") or v1 quota/period values. */
export function cgroupCpuLimit(cpuMax: string | null, v1Quota: string | null = null, v1Period: string | null = null): number | null {
  if (cpuMax !== null) {
    const [quota, period] = cpuMax.trim().split(/\s+/);
    if (quota === undefined || quota === "max") return null;
    const q = Number(quota), p = Number(period ?? "100000");
    return q > 0 && p > 0 ? q / p : null;
  }
  if (v1Quota !== null && v1Period !== null) {
    const q = Number(v1Quota.trim()), p = Number(v1Period.trim());
    return q > 0 && p > 0 ? q / p : null;
  }
  return null;
}

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/** This process's own cgroup CPU limit (v2 at its own cgroup path, else v1's cpu controller), in CPUs. */
export function readCgroupCpuLimit(): number | null {
  const lines = (readOrNull("/proc/self/cgroup") ?? "").split("\n");
  const v2 = lines.find((l) => l.startsWith("0::"))?.slice(3).trim();
  for (const dir of v2 !== undefined ? [`/sys/fs/cgroup${v2}`, "/sys/fs/cgroup", "/sys/fs/cgroup/unified"] : ["/sys/fs/cgroup"]) {
    const text = readOrNull(`${dir}/cpu.max`.replace(/\/+/g, "/"));
    if (text !== null) return cgroupCpuLimit(text);
  }
  // v1: the line "N:cpu,cpuacct:/path" (controllers in any order) names this process's group
  const v1 = lines.map((l) => l.split(":")).find((f) => f.length >= 3 && f[1]!.split(",").includes("cpu"))?.slice(2).join(":");
  for (const root of ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]) {
    for (const dir of v1 !== undefined && v1 !== "/" ? [`${root}${v1}`, root] : [root]) {
      const quota = readOrNull(`${dir}/cpu.cfs_quota_us`);
      if (quota !== null) return cgroupCpuLimit(null, quota, readOrNull(`${dir}/cpu.cfs_period_us`));
    }
  }
  return null;
}

export function defaultThreadChoice(env: Record<string, string | undefined> = process.env): ThreadChoice {
  return chooseThreadCount({ env, cpus: availableParallelism(), cgroupCpus: readCgroupCpuLimit() });
}
