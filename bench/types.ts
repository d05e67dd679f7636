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
  /**
   * The ratio round by round, where the case alternates the two sides (one PyTorch step, then one
   * of ours): median and range of the per-round ratios, so one run shows how far a ratio can be
   * trusted on a noisy machine.
   */
  ratioSpread?: RatioSpread;
  /** Fraction of this CPU's measured fp32 peak, where the work has a FLOP count. */
  peakFraction?: number;
  note?: string;
}

export interface RatioSpread {
  median: number;
  min: number;
  max: number;
  /** Interquartile range of the per-round ratios. */
  q1: number;
  q3: number;
  rounds: number;
}

export interface BenchCase {
  name: string;
  run(opts: { quick: boolean; threads: number }): Promise<BenchResult[]>;
}
