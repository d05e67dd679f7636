#!/usr/bin/env node
// Tells node-gyp where libtorch is: $LIBTORCH (an unpacked official libtorch, CUDA builds
// included, the convention of Rust's tch) or Debian's libtorch-dev. Prints include dirs, library
// dir or linker flags as binding.gyp asks; exits with a clear message when none is found.
import { existsSync } from "node:fs";
import { join } from "node:path";

const what = process.argv[2];
const root = process.env.LIBTORCH;
let include;
let libdir;
if (root) {
  include = [join(root, "include"), join(root, "include/torch/csrc/api/include")];
  libdir = join(root, "lib");
  if (!existsSync(join(include[0], "ATen/ATen.h")) || !existsSync(libdir)) {
    console.error(`LIBTORCH=${root} does not look like libtorch: expected ${include[0]}/ATen/ATen.h and ${libdir}/.`);
    process.exit(1);
  }
} else {
  include = ["/usr/include", "/usr/include/torch/csrc/api/include"];
  libdir = "/usr/lib/x86_64-linux-gnu";
  if (!existsSync("/usr/include/ATen/ATen.h")) {
    console.error(
      "libtorch was not found. Install it with `sudo apt-get install -y libtorch-dev libopenblas0-pthread` " +
        "(Debian/Ubuntu), or set LIBTORCH to an unpacked libtorch from pytorch.org (CUDA builds included).",
    );
    process.exit(1);
  }
}
if (what === "include") console.log(include.join(" "));
else if (what === "libdir") console.log(libdir);
else if (what === "libs") {
  // CUDA builds register their kernels from torch_cuda at load time: keep it linked even though
  // no symbol of it is referenced directly.
  const libs = ["-ltorch", "-ltorch_cpu", "-lc10"];
  if (existsSync(join(libdir, "libtorch_cuda.so"))) libs.push("-Wl,--no-as-needed", "-ltorch_cuda", "-lc10_cuda", "-Wl,--as-needed");
  console.log(libs.join(" "));
} else if (what === "defines") {
  // NCCL process groups exist only in CUDA builds of libtorch.
  console.log(existsSync(join(libdir, "libtorch_cuda.so")) ? "DDPO_WITH_NCCL USE_C10D_NCCL" : "DDPO_CPU_ONLY");
} else {
  console.error("usage: libtorch.mjs include|libdir|libs|defines");
  process.exit(2);
}
