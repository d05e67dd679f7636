// The contract every benchmark case follows; bench/run.ts collects them into a table and JSON.

export interface BenchResult {
  /** What was measured, e.g. "matmul 1024³". */
  name: string;
  /** Unit of `ours` and `reference` (always a throughput: higher is better), e.g. "GFLOP/s", "steps/s". */
  unit: string;
  ours: number;
  /** PyTorch (Debian's python3-torch) doing the same work in the same run, same thread count. */
  reference?: number;
  /** ours / reference throughput. */
  ratio?: number;
  /** Fraction of this CPU's measured fp32 peak, where the work has a FLOP count. */
  peakFraction?: number;
  note?: string;
}

export interface BenchCase {
  name: string;
  run(opts: { quick: boolean; threads: number }): Promise<BenchResult[]>;
}
