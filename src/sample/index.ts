export * from "./generate.js";
export * from "./png.js";
