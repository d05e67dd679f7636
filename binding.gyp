{
  "targets": [
    {
      "target_name": "diffusion_dpo",
      "sources": ["native/binding.cc", "native/ops.cc", "native/optim.cc", "native/distributed.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<!@(node scripts/libtorch.mjs include)"],
      "libraries": ["-L<!(node scripts/libtorch.mjs libdir)", "-Wl,-rpath,<!(node scripts/libtorch.mjs libdir)", "<!@(node scripts/libtorch.mjs libs)"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O2", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "USE_C10D_GLOO", "<!@(node scripts/libtorch.mjs defines)"]
    }
  ]
}
