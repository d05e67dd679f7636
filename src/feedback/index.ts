// AI feedback: reward models (the RewardModel contract, built-in rewards, loadReward), candidate
// pair generation into the preference store, and labelling stored pairs with a reward.
export * from "./reward.js";
export * from "./appeal.js";
export * from "./alignment.js";
export * from "./category.js";
export * from "./registry.js";
export * from "./pairs.js";
export * from "./label.js";
export * from "./clip-rewards.js";
export * from "./aesthetic.js";
export * from "./mix.js";
export * from "./spec.js";
export * from "./scorers.js";
