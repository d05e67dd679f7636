// `diffusion-dpo serve`: the local web app — label pairs into a preference store, compare base
// and tuned samples of an evaluation, watch a training run live.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";

export default defineCommand({
  meta: { name: "serve", description: "Serve the local web app: label pairs (1/2/3/space, u), compare base vs tuned, a blind A/B human evaluation, watch a training run." },
  args: {
    db: { type: "string", description: "SQLite preference store to label into (created when missing)", default: "preferences.db" },
    port: { type: "string", description: "Port to listen on (0 picks a free one)", default: "8787" },
    host: { type: "string", description: "Address to bind; anything but loopback needs --token", default: "127.0.0.1" },
    token: { type: "string", description: "Secret every request must carry (or set DIFFUSION_DPO_TOKEN); required off loopback", default: "" },
    eval: { type: "string", description: "Evaluation output folder (eval.json, report.html) for the Compare page and the blind A/B human evaluation", default: "" },
    blind: { type: "boolean", description: "Blind study: with --eval, serve the A/B page but not the Compare page or report (they name base and tuned)", default: false },
    humanDb: { type: "string", description: "SQLite file for the A/B human-eval votes (default: <eval>/human.sqlite)", default: "" },
    run: { type: "string", description: "Training run folder (metrics.jsonl, validation/) for the Run page", default: "" },
    json: { type: "boolean", description: "Print one JSON object with the URL once listening", default: false },
  },
  async run({ args }) {
    const port = Number(args.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be an integer from 0 to 65535, got '${args.port}'`);
    const token = args.token !== "" ? args.token : process.env.DIFFUSION_DPO_TOKEN || undefined;
    if (args.eval !== "" && !existsSync(join(args.eval, "eval.json"))) {
      throw new UsageError(`--eval ${args.eval}: no eval.json there; give the output folder of \`diffusion-dpo eval\``);
    }
    if (args.blind && args.eval === "") throw new UsageError("--blind needs --eval DIR: the evaluation folder whose samples the raters compare");
    if (args.humanDb !== "" && args.eval === "") throw new UsageError("--human-db needs --eval DIR: the evaluation folder whose samples the raters compare");
    if (args.run !== "" && !existsSync(args.run)) {
      throw new UsageError(`--run ${args.run}: no such folder; give the outputDir of a training run`);
    }
    const { startServer } = await import("../../server/index.js");
    const { checkBinding } = await import("../../server/security.js");
    try {
      checkBinding(args.host, token);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const handle = await startServer({
      db: args.db,
      host: args.host,
      port,
      token,
      evalDir: args.eval !== "" ? args.eval : undefined,
      humanDb: args.humanDb !== "" ? args.humanDb : undefined,
      blind: args.blind,
      runDir: args.run !== "" ? args.run : undefined,
    });
    if (args.json) {
      process.stdout.write(`${JSON.stringify({ url: handle.openUrl, host: handle.host, port: handle.port, db: args.db, eval: args.eval || null, run: args.run || null, blind: args.blind, humanDb: args.eval ? args.humanDb || join(args.eval, "human.sqlite") : null })}\n`);
    } else {
      const pages = ["label", ...(args.eval ? (args.blind ? ["human (blind)"] : ["compare", "human"]) : []), ...(args.run ? ["run"] : [])].join(", ");
      process.stdout.write(`diffusion-dpo serve: ${handle.openUrl}  (${pages}; store ${args.db})\nCtrl+C stops the server.\n`);
    }
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        void handle.close().then(resolve);
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
  },
});
