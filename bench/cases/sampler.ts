// Sampler overhead per step: everything a sampling step does except the network call (scale the
// input, convert the prediction, update the sample, draw ancestral noise, per-step tidy scope),
// with a model that returns a precomputed tensor, on a [4, 3, 32, 32] latent. Also with
// classifier-free guidance wrapped around that model (cat of [uncond, cond], chunk, combine).
// The reference is the same step loop in PyTorch (Debian's python3-torch), written the way
// diffusers' schedulers compute it (scripts/golden/diffusion/make_golden.py's classes).
// The UNet comparison (overhead as a fraction of a UNet call) is added by bench/run.ts.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { BenchCase, BenchResult } from "../types.js";
import { Generator, keep, randn, setNumThreads, type Tensor } from "../../src/tensor/index.js";
import {
  classifierFreeGuidance,
  NoiseSchedule,
  sample,
  SAMPLER_NAMES,
  seededInputs,
  type SamplerName,
} from "../../src/diffusion/index.js";

const SHAPE = [4, 3, 32, 32];

function timeSampler(name: SamplerName, steps: number, reps: number, guided: boolean): number {
  const schedule = new NoiseSchedule();
  const fixed = keep(randn(SHAPE, new Generator(1)));
  const fixed2 = keep(randn([8, 3, 32, 32], new Generator(2)));
  const cond = keep(randn([4, 7, 16], new Generator(3)));
  const uncond = keep(randn([1, 7, 16], new Generator(4)));
  const model = guided
    ? classifierFreeGuidance(() => fixed2, cond, uncond, 7.5)
    : (_x: Tensor, _t: number) => fixed;
  let best = Infinity;
  for (let r = 0; r < reps + 1; r++) {
    const { gen, noise } = seededInputs([1, 2, 3, 4], SHAPE.slice(1));
    const t0 = process.hrtime.bigint();
    const out = sample({ sampler: name, model, schedule, steps, noise, gen });
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    out.dispose();
    noise.dispose();
    if (r > 0) best = Math.min(best, dt); // the first run warms up
  }
  for (const t of [fixed, fixed2, cond, uncond]) t.dispose();
  schedule.dispose();
  return best / steps;
}

const PY_REFERENCE = `
import sys, time, importlib.util, torch
torch.set_num_threads(int(sys.argv[2]))
spec = importlib.util.spec_from_file_location("g", sys.argv[1]); g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)
steps, reps = int(sys.argv[3]), int(sys.argv[4])
fixed = torch.randn((4, 3, 32, 32), generator=torch.Generator().manual_seed(1))
for name in ["ddpm", "ddim", "euler", "euler_ancestral", "dpmpp_2m"]:
    best = float("inf")
    for r in range(reps + 1):
        gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3, 4)]
        noise = torch.cat([torch.randn((1, 3, 32, 32), generator=q) for q in gens])
        t0 = time.perf_counter()
        with torch.no_grad():
            sch = g.SAMPLERS[name](dict(g.SD15), steps)
            x = noise * sch.init_noise_sigma
            for i in range(len(sch.timesteps)):
                sch.scale(x, i)
                x = sch.step(fixed, i, x, gens)
        dt = time.perf_counter() - t0
        if r > 0: best = min(best, dt)
    print(name, best / steps)
`;

function pythonReference(threads: number, steps: number, reps: number): Map<string, number> | null {
  const script = fileURLToPath(new URL("../../scripts/golden/diffusion/make_golden.py", import.meta.url));
  const res = spawnSync("/usr/bin/python3", ["-c", PY_REFERENCE, script, String(threads), String(steps), String(reps)], {
    encoding: "utf8",
    timeout: 120_000,
  });
  if (res.status !== 0) return null;
  const out = new Map<string, number>();
  for (const line of res.stdout.trim().split("\n")) {
    const [name, sec] = line.split(" ");
    if (name !== undefined && sec !== undefined) out.set(name, Number(sec));
  }
  return out;
}

export const samplerBench: BenchCase = {
  name: "sampler",
  async run({ quick, threads }) {
    setNumThreads(threads);
    const steps = quick ? 20 : 50;
    const reps = quick ? 2 : 5;
    const ref = pythonReference(threads, steps, reps);
    const results: BenchResult[] = [];
    for (const name of SAMPLER_NAMES) {
      const perStep = timeSampler(name, steps, reps, false);
      const refPerStep = ref?.get(name);
      const ours = 1 / perStep;
      const reference = refPerStep !== undefined ? 1 / refPerStep : undefined;
      results.push({
        name: `${name} step overhead [${SHAPE.join(",")}]`,
        unit: "steps/s",
        ours,
        ...(reference !== undefined ? { reference, ratio: ours / reference } : {}),
        note: `${(perStep * 1e6).toFixed(1)} µs per step excluding the model call (${steps} steps, best of ${reps})`,
      });
    }
    for (const name of ["ddim", "dpmpp_2m"] as SamplerName[]) {
      const perStep = timeSampler(name, steps, reps, true);
      results.push({
        name: `${name} + CFG 7.5 step overhead [${SHAPE.join(",")}]`,
        unit: "steps/s",
        ours: 1 / perStep,
        note: `${(perStep * 1e6).toFixed(1)} µs per step excluding the model call, incl. the [uncond, cond] batching`,
      });
    }
    return results;
  },
};
