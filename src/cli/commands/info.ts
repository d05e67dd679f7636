// `diffusion-dpo info`: what the engine sees — libtorch threads, CUDA devices, memory.
import { defineCommand } from "citty";

export default defineCommand({
  meta: { name: "info", description: "Show the engine's view of this machine: threads, CUDA devices, libtorch build." },
  args: {
    json: { type: "boolean", description: "Print one JSON object", default: false },
  },
  async run({ args }) {
    const { getNumThreads, getBlasThreads, cudaAvailable, cudaDeviceCount } = await import("../../tensor/index.js");
    const { initialThreads } = await import("../../tensor/native.js");
    const info = {
      threads: getNumThreads(),
      threadsFrom: initialThreads.source,
      blasThreads: getBlasThreads() ?? "not OpenBLAS",
      cuda: cudaAvailable(),
      cudaDevices: cudaDeviceCount(),
      libtorch: process.env.LIBTORCH ?? "system (Debian libtorch-dev)",
      node: process.version,
    };
    if (args.json) process.stdout.write(`${JSON.stringify(info)}\n`);
    else for (const [k, v] of Object.entries(info)) process.stdout.write(`${k.padEnd(12)} ${String(v)}\n`);
  },
});
