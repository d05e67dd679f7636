// The whole preference loop on the shipped emoji model: runDemo (pairs → AI labels → DPO →
// evaluation → report under one output folder, resumable), its settings and events.
export * from "./runDemo.js";
export * from "./settings.js";
export * from "./prompts.js";
export { renderDemoReport, demoSection, type DemoReportInput } from "./report.js";
export { modelFingerprint, stagesDone, readStageMark, type StageMark } from "./stages.js";
