// Request parsing shared by the app's routes: a zod-validated JSON body whose first issue names
// the field, and a numeric path id.
import type { Context } from "hono";
import { z } from "zod";
import { jsonError } from "./security.js";

export async function parseBody<T extends z.ZodType>(c: Context, schema: T): Promise<{ ok: true; value: z.infer<T> } | { ok: false; res: Response }> {
  let raw: unknown;
  try {
    const text = await c.req.text();
    raw = text === "" ? {} : JSON.parse(text);
  } catch (e) {
    return { ok: false, res: jsonError(c, 400, `the body is not valid JSON (${(e as Error).message})`) };
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    return { ok: false, res: jsonError(c, 400, `${i.path.length ? i.path.join(".") : "body"}: ${i.message}`) };
  }
  return { ok: true, value: r.data };
}

export function parseId(s: string): number | null {
  if (!/^\d{1,15}$/.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}

/** A rater id: what the labelling and human-eval pages store votes under. */
export const Rater = z
  .string()
  .trim()
  .min(1, "rater must not be empty")
  .max(64, "rater must be at most 64 characters")
  .regex(/^[^\p{Cc}]+$/u, "rater must not contain control characters");
