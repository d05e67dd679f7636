// Sampling (`diffusion-dpo sample`): prompts → images → PNG files and a labelled grid.
//
//   const model = loadModelFolder("models/emoji-base");          // or any diffusers SD folder
//   const images = generate({ model, prompts, seeds, sampler: "ddim", steps: 50, guidance: 3 });
//   await writeSamples("out/samples", images, prompts, seeds);   // 000-seed0.png …, grid.png, samples.json
//
// Image-to-image: generate({ …, initImages: [await readImage("in.png", 32)], strength: 0.6 }).
export * from "./generate.js";
export * from "./png.js";
