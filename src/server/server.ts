// Binds the web app to an address: 127.0.0.1 by default; any other address needs a token.
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { createAdaptorServer } from "@hono/node-server";
import { PreferenceStore } from "../data/store.js";
import { createApp, type AppOptions } from "./app.js";
import { checkBinding } from "./security.js";

export interface ServerOptions extends Omit<AppOptions, "store"> {
  /** An open store (left open by close()) ... */
  store?: PreferenceStore;
  /** ... or the path of one to open (created when missing; closed by close()). */
  db?: string;
  /** Address to bind (default 127.0.0.1). */
  host?: string;
  /** Port (default 8787; 0 picks a free one). */
  port?: number;
}

export interface ServerHandle {
  /** Base URL, e.g. http://127.0.0.1:8787/ */
  url: string;
  /** The URL to open in a browser: with `?token=` when a token is set. */
  openUrl: string;
  host: string;
  port: number;
  store: PreferenceStore;
  /** Stops accepting requests, ends event streams and open connections, closes a store it opened. */
  close(): Promise<void>;
}

function urlHost(host: string): string {
  if (host === "0.0.0.0" || host === "::") return host === "::" ? "[::1]" : "127.0.0.1";
  return host.includes(":") ? `[${host}]` : host;
}

export async function startServer(opts: ServerOptions): Promise<ServerHandle> {
  const host = opts.host ?? "127.0.0.1";
  checkBinding(host, opts.token);
  if (!opts.store && !opts.db) throw new Error("startServer: give a preference store (store) or its file (db)");
  const ownStore = !opts.store;
  const store = opts.store ?? new PreferenceStore(opts.db!);
  let web: ReturnType<typeof createApp>;
  try {
    web = createApp({ ...opts, store, host });
  } catch (e) {
    if (ownStore) store.close();
    throw e;
  }
  const server = createAdaptorServer({ fetch: web.app.fetch, hostname: host }) as Server;
  try {
    await new Promise<void>((resolvePromise, reject) => {
      const onError = (e: NodeJS.ErrnoException) => {
        reject(new Error(e.code === "EADDRINUSE" ? `port ${opts.port ?? 8787} on ${host} is in use; pick another with --port (0 picks a free one)` : `cannot listen on ${host}:${opts.port ?? 8787} (${e.message})`));
      };
      server.once("error", onError);
      server.listen(opts.port ?? 8787, host, () => {
        server.off("error", onError);
        resolvePromise();
      });
    });
  } catch (e) {
    web.close();
    if (ownStore) store.close();
    throw e;
  }
  const port = (server.address() as AddressInfo).port;
  const url = `http://${urlHost(host)}:${port}/`;
  let closing: Promise<void> | null = null;
  return {
    url,
    openUrl: opts.token !== undefined ? `${url}?token=${encodeURIComponent(opts.token)}` : url,
    host,
    port,
    store,
    close() {
      closing ??= new Promise<void>((done) => {
        web.close();
        server.close(() => {
          if (ownStore) store.close();
          done();
        });
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
