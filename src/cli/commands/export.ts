// `diffusion-dpo export`: the store's labelled pairs as JSONL (chosen/rejected paths) or as a
// Pick-a-Pic-schema parquet file, so pairs collected here train with other tools too.
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";

export default defineCommand({
  meta: { name: "export", description: "Export a preference store's labelled pairs to JSONL or Pick-a-Pic-schema parquet." },
  args: {
    db: { type: "string", description: "Preference store (SQLite file)", default: "runs/pairs.sqlite" },
    out: { type: "string", description: "Output file: *.jsonl (images written beside it) or *.parquet", required: true },
    labels: { type: "string", description: "Which labels decide: human, ai, or human-then-ai", default: "human-then-ai" },
    reward: { type: "string", description: "AI reward whose labels count (needed when pairs carry several)", default: "" },
    margin: { type: "string", description: "Tie margin for AI labels (default: the margin stored by `label`)", default: "" },
    includeTies: { type: "boolean", description: "Parquet only: keep ties as (0.5, 0.5) rows", default: false },
    json: { type: "boolean", description: "Print one JSON object with the summary", default: false },
  },
  async run({ args }) {
    const { existsSync } = await import("node:fs");
    if (!existsSync(args.db)) throw new UsageError(`--db ${args.db}: no such preference store`);
    if (!["human", "ai", "human-then-ai"].includes(args.labels)) throw new UsageError(`--labels must be human, ai or human-then-ai, got "${args.labels}"`);
    const lower = args.out.toLowerCase();
    const format = lower.endsWith(".jsonl") ? "jsonl" : lower.endsWith(".parquet") ? "parquet" : null;
    if (!format) throw new UsageError(`--out ${args.out}: name a .jsonl or .parquet file`);
    let margin: number | undefined;
    if (args.margin !== "") {
      margin = Number(args.margin);
      if (!(margin >= 0)) throw new UsageError(`--margin must be a number ≥ 0, got "${args.margin}"`);
    }
    if (format === "jsonl" && args.includeTies) throw new UsageError("--include-ties applies to parquet only (JSONL has no tie label)");
    const { PreferenceStore } = await import("../../data/store.js");
    const store = new PreferenceStore(args.db);
    if (args.reward === "" && args.labels !== "human") {
      const rewards = (store.db.prepare("SELECT DISTINCT reward FROM ai_labels ORDER BY reward").all() as { reward: string }[]).map((r) => r.reward);
      if (rewards.length > 1) {
        store.close();
        throw new UsageError(`${args.db} holds AI labels from several rewards (${rewards.join(", ")}); choose one with --reward NAME`);
      }
    }
    const opts = {
      labels: args.labels as "human" | "ai" | "human-then-ai",
      ...(args.reward !== "" ? { reward: args.reward } : {}),
      ...(margin !== undefined ? { margin } : {}),
    };
    try {
      const rows = format === "jsonl"
        ? (await store.exportJsonl(args.out, opts)).pairs
        : (await store.exportParquet(args.out, { ...opts, includeTies: args.includeTies })).rows;
      if (args.json) process.stdout.write(`${JSON.stringify({ db: args.db, out: args.out, format, rows })}\n`);
      else process.stdout.write(`wrote ${rows} pairs to ${args.out}\n`);
    } finally {
      store.close();
    }
  },
});
