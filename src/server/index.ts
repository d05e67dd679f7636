// The local web app behind `diffusion-dpo serve`.
//
//   import { startServer } from "diffusion-dpo/server";
//   const h = await startServer({ db: "prefs.db", port: 0, evalDir: "out/eval", runDir: "runs/dpo" });
//   // h.openUrl → open in a browser; await h.close() when done
export { createApp, type App, type AppOptions } from "./app.js";
export { startServer, type ServerHandle, type ServerOptions } from "./server.js";
export { checkBinding, isLoopbackHost, MIN_TOKEN_LENGTH, TOKEN_COOKIE, TOKEN_HEADER } from "./security.js";
export { EvalFolder, evalImageUrl } from "./evalFolder.js";
export { MetricsTail, RunFolder } from "./runFolder.js";
export { swappedFor, type Progress, type ShownPair } from "./labelling.js";
export { HumanEvalSession, humanImageUrl, HumanVoteBody, mountHumanEval, type ShownComparison } from "./humanEval.js";
