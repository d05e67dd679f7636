export * from "./preference.js";
