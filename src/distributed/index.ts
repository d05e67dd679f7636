export * from "./process-group.js";
export * from "./launch.js";
export * from "./reducer.js";
