// `diffusion-dpo sample` for SD3 and Flux folders (sample.ts hands over when model_index.json names
// StableDiffusion3Pipeline or FluxPipeline): the flow pipelines, seeded latents per image, the same
// output files (PNGs, grid.png, samples.json) as the UNet models.
import { UsageError } from "./errors.js";
import { ProgressBar } from "./progress.js";

export interface FlowSampleArgs {
  model: string;
  prompts: string[];
  seeds: number[];
  steps: number;
  guidance: number;
  negativePrompt: string;
  size?: number;
  maxSequenceLength?: number;
  out: string;
}

export async function runFlowSample(a: FlowSampleArgs): Promise<Record<string, unknown>> {
  const { loadFlowPipeline, disposeFlowPipeline, generateFlowImages } = await import("../models/flow-generate.js");
  const { writeSamples } = await import("../sample/png.js");
  let pipe;
  try {
    pipe = loadFlowPipeline(a.model);
  } catch (e) {
    throw new UsageError(`--model ${a.model}: ${(e as Error).message}`);
  }
  try {
    const bar = new ProgressBar("sample");
    const started = performance.now();
    const images = generateFlowImages(pipe, {
      prompts: a.prompts, seeds: a.seeds, steps: a.steps, guidance: a.guidance, negativePrompt: a.negativePrompt, size: a.size, maxSequenceLength: a.maxSequenceLength,
      onEvent: (e) => bar.update(e.image * e.total + e.done, e.images * e.total, `image ${e.image + 1}/${e.images}`),
    });
    bar.done();
    const seconds = (performance.now() - started) / 1000;
    const written = await writeSamples(a.out, images, a.prompts, a.seeds);
    return {
      model: a.model, family: pipe.family, out: a.out, grid: written.grid, files: written.files, prompts: a.prompts, seeds: a.seeds,
      sampler: "flow_match_euler", steps: a.steps, guidance: a.guidance, size: images[0]?.width ?? null, seconds: Math.round(seconds * 100) / 100,
    };
  } finally {
    disposeFlowPipeline(pipe);
  }
}
