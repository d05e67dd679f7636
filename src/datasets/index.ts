export * from "./emoji.js";
export * from "./emojiModel.js";
export * from "./tokenizer.js";
