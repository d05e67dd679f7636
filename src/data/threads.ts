/**
 * Starting a worker thread from a module next to the caller, both when the project runs
 * compiled (.js) and from TypeScript sources under tsx (tests, `tsx` scripts): a worker does
 * not inherit tsx's loader, so for a .ts entry the worker first registers tsx, then imports it.
 */
import { Worker, type WorkerOptions } from "node:worker_threads";

/**
 * `new Worker` for the module `name` (without extension) beside `callerUrl`
 * (pass `import.meta.url`); the extension follows the caller's.
 */
export function startWorker(callerUrl: string, name: string, options: WorkerOptions = {}): Worker {
  const ts = /\.[cm]?ts$/.test(new URL(callerUrl).pathname);
  const entry = new URL(`./${name}${ts ? ".ts" : ".js"}`, callerUrl);
  if (!ts) return new Worker(entry, options);
  let api: string;
  try {
    api = import.meta.resolve("tsx/esm/api");
  } catch {
    throw new Error(`cannot start worker ${entry.pathname}: running from TypeScript sources needs the 'tsx' package`);
  }
  const boot = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(boot, { ...options, eval: true });
}
