// Request guards for the local web app: token, Host (DNS rebinding), same-origin POSTs, body
// size, JSON content type, and the security headers every answer carries.
import { createHash, timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { getCookie, setCookie } from "hono/cookie";

export const TOKEN_COOKIE = "ddpo_token";
export const TOKEN_HEADER = "x-diffusion-dpo-token";
/** Shortest token accepted: a guessable token on an exposed address is no protection. */
export const MIN_TOKEN_LENGTH = 8;

/** JSON error answer: `{ error: message }` with the given status. */
export function jsonError(c: Context, status: 400 | 401 | 403 | 404 | 409 | 413 | 415 | 500, message: string): Response {
  return c.json({ error: message }, status);
}

/** Whether `host` names this machine only (loopback), so binding it exposes nothing. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127(\.\d{1,3}){3}$/.test(h);
}

/**
 * Throws when the binding would expose the app without a token: any address other than loopback
 * needs `token`, and a token must be at least MIN_TOKEN_LENGTH characters.
 */
export function checkBinding(host: string, token: string | undefined): void {
  if (token !== undefined && token.length < MIN_TOKEN_LENGTH) {
    throw new Error(`--token must be at least ${MIN_TOKEN_LENGTH} characters (got ${token.length}); use a long random string, e.g. \`openssl rand -hex 16\``);
  }
  if (!isLoopbackHost(host) && token === undefined) {
    throw new Error(`--host ${host} exposes the app beyond this machine; give --token (a long random string) or bind 127.0.0.1`);
  }
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

function sameToken(given: string | undefined, token: string): boolean {
  if (given === undefined) return false;
  return timingSafeEqual(digest(given), digest(token));
}

/**
 * Token check on every request (when a token is configured): `Authorization: Bearer T`, the
 * `x-diffusion-dpo-token` header, or the cookie set when a page was opened once with `?token=T`
 * (that request is redirected to the same URL without the token, so it leaves the address bar).
 */
export function requireToken(token: string): MiddlewareHandler {
  return async (c, next) => {
    const url = new URL(c.req.url);
    const fromQuery = url.searchParams.get("token");
    if (fromQuery !== null) {
      if (!sameToken(fromQuery, token)) return jsonError(c, 401, "wrong token: open the URL that `diffusion-dpo serve` printed");
      setCookie(c, TOKEN_COOKIE, token, { httpOnly: true, sameSite: "Strict", path: "/" });
      if (c.req.method === "GET" || c.req.method === "HEAD") {
        url.searchParams.delete("token");
        return c.redirect(url.pathname + url.search, 303);
      }
      return next();
    }
    const auth = c.req.header("authorization");
    const bearer = auth?.startsWith("Bearer ") ? auth.slice(7) : undefined;
    const given = bearer ?? c.req.header(TOKEN_HEADER) ?? getCookie(c, TOKEN_COOKIE);
    if (!sameToken(given, token)) {
      return jsonError(c, 401, "this server needs a token: open the URL that `diffusion-dpo serve` printed (it ends in ?token=...), or send the x-diffusion-dpo-token header");
    }
    return next();
  };
}

/**
 * Without a token the app answers only requests addressed to a loopback name (or the bound
 * host), so a web page that rebinds its DNS name to 127.0.0.1 cannot read it.
 */
export function requireLocalHostHeader(boundHost: string): MiddlewareHandler {
  return async (c, next) => {
    const raw = c.req.header("host") ?? new URL(c.req.url).host;
    const name = raw.replace(/:\d+$/, "");
    if (!isLoopbackHost(name) && name.toLowerCase() !== boundHost.toLowerCase()) {
      return jsonError(c, 403, `requests must address this machine (Host ${raw} refused); open http://127.0.0.1:<port>/`);
    }
    return next();
  };
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * State-changing requests must come from this app's own pages: `Sec-Fetch-Site` same-origin when
 * the browser sends it, else an `Origin` equal to the request's own. Requests with neither header
 * come from non-browser clients (curl, scripts), which a web page cannot forge, and pass.
 */
export function requireSameOrigin(): MiddlewareHandler {
  return async (c, next) => {
    if (SAFE_METHODS.has(c.req.method)) return next();
    const site = c.req.header("sec-fetch-site");
    if (site !== undefined && site !== "same-origin") {
      return jsonError(c, 403, `cross-origin ${c.req.method} refused (Sec-Fetch-Site: ${site})`);
    }
    const origin = c.req.header("origin");
    if (origin !== undefined) {
      const host = c.req.header("host") ?? new URL(c.req.url).host;
      let originHost: string | null = null;
      try {
        originHost = origin === "null" ? null : new URL(origin).host;
      } catch {
        originHost = null;
      }
      if (originHost === null || originHost.toLowerCase() !== host.toLowerCase()) {
        return jsonError(c, 403, `cross-origin ${c.req.method} refused (Origin ${origin} is not ${host})`);
      }
    }
    return next();
  };
}

/** POST bodies must be JSON (this also keeps cross-site HTML forms from posting without a preflight). */
export function requireJson(): MiddlewareHandler {
  return async (c, next) => {
    if (SAFE_METHODS.has(c.req.method)) return next();
    const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
    if (type !== "application/json") {
      return jsonError(c, 415, `send the body as JSON with Content-Type: application/json (got ${type || "none"})`);
    }
    return next();
  };
}

/** Content-Security-Policy for the app's own pages: everything from this origin, nothing inline. */
export const APP_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "frame-src 'self'",
  "frame-ancestors 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "object-src 'none'",
].join("; ");

/** The evaluation report is foreign HTML: no scripts, same-origin images and inline styles only. */
export const REPORT_CSP = ["sandbox allow-same-origin", "default-src 'none'", "img-src 'self' data:", "style-src 'unsafe-inline'", "frame-ancestors 'self'"].join("; ");

export function securityHeaders(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    c.header("X-Content-Type-Options", "nosniff");
    c.header("Referrer-Policy", "no-referrer");
    c.header("Cross-Origin-Resource-Policy", "same-origin");
    if (!c.res.headers.has("Content-Security-Policy")) c.header("Content-Security-Policy", APP_CSP);
    if (!c.res.headers.has("X-Frame-Options")) c.header("X-Frame-Options", "SAMEORIGIN");
  };
}
