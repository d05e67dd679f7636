export * from "./tensor.js";
export * from "./ops.js";
