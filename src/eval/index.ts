// Evaluation: did alignment make the model better, by how much, at what cost.
//
//   const models = loadModelPair("models/emoji-base", "runs/dpo");          // full, UNet-only or LoRA
//   const result = await evaluate({ models, prompts: readPrompts("parti.tsv"), promptSource: "parti.tsv",
//     seeds: [0, 1], sampler: "ddim", steps: 25, guidance: 3, rewards: [loadReward("appeal")],
//     pairs: { spec: "heldout.jsonl", limit: 200 }, bestOfN: 8, outDir: "runs/eval" });
//   result.summary.winRate.appeal.rate                                     // + interval, ties, byCategory
//
// Output folder: eval.json ({ summary, samples }, see EvalJson), report.html, images/{base,tuned}/<i>.png.
export * from "./stats.js";
export * from "./prompts.js";
export * from "./implicit.js";
export * from "./diversity.js";
export * from "./bestOfN.js";
export * from "./models.js";
export * from "./runLog.js";
export * from "./evaluate.js";
export { renderReport, lineChart, trainingCurves, type ReportOptions } from "./report.js";
