// Shared by the flow-model configs (T5, SD3, Flux, FlowMatch scheduler): read a config.json and
// parse it with a zod schema, with errors that name the file and the offending keys.
import { existsSync, readFileSync } from "node:fs";
import type { z } from "zod";

/** Reads `path` as a JSON object; a missing file or bad JSON is an error naming `what` and the path. */
export function readJsonObject(path: string, what: string): Record<string, unknown> {
  if (!existsSync(path)) throw new Error(`${what}: ${path} is missing`);
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`${what}: ${path} is not valid JSON (${(err as Error).message})`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error(`${what}: ${path} must hold a JSON object`);
  return value as Record<string, unknown>;
}

/** schema.safeParse with the issues listed as "key: message" under `source` and `kind`. */
export function parseConfig<S extends z.ZodType>(schema: S, json: unknown, source: string, kind: string): z.infer<S> {
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new Error(`${source}: not a valid ${kind} (${issues})`);
  }
  return parsed.data;
}
