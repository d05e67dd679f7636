// Worker thread of PreferenceLoader: decodes and augments pairs (see prepare.ts).
import { parentPort } from "node:worker_threads";
import { runTask, type PrepareTask } from "./prepare.js";

const port = parentPort;
if (!port) throw new Error("decodeWorker.ts must run as a worker thread");
port.on("message", (t: PrepareTask) => {
  void runTask(t).then((r) => {
    if (r.ok) port.postMessage(r, [r.pixels.buffer as ArrayBuffer]);
    else port.postMessage(r);
  });
});
