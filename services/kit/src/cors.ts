import { cors } from "@connectrpc/connect";
import * as z from "zod/mini";
import type { HttpRequest, HttpResponse } from "./server.js";

/**
 * Which web origins may call a server from a browser with a bearer token. Credentials
 * (cookies) are never allowed cross-origin: cookie sessions stay same-origin.
 */
export interface CorsOptions {
  /** `*` for any origin, or the exact origins (`https://app.example.com`) allowed. */
  origins: "*" | readonly string[];
}

/** What browsers may send: the Connect and gRPC-web headers, the bearer token, a request id. */
const allowedHeaders = [...cors.allowedHeaders, "Authorization", "X-Request-Id"].join(", ");
/** What scripts may read: gRPC-web status (trailers-only responses carry it in headers), the request id. */
const exposedHeaders = [...cors.exposedHeaders, "X-Request-Id"].join(", ");
const allowedMethods = cors.allowedMethods.join(", ");
/** How long browsers may cache a preflight answer, in seconds: Chromium's cap. */
const maxAgeSeconds = "7200";

/** An origin as browsers send it: scheme, host and an optional port, nothing after. */
const originPattern = /^[a-z][a-z0-9+.-]*:\/\/[^/?#\s]+$/i;

/**
 * The `--cors-origins` setting: `*`, or comma-separated origins (`https://a.example,http://localhost:5173`).
 */
export const corsOriginsSchema = z.pipe(
  z
    .string()
    .check(
      z.refine(
        (value) => value.trim() === "*" || splitOrigins(value).every((origin) => originPattern.test(origin)),
        "must be * or comma-separated origins like https://app.example.com (scheme, host, optional port; no path)",
      ),
    ),
  z.transform((value): "*" | string[] => (value.trim() === "*" ? "*" : splitOrigins(value))),
);

function splitOrigins(value: string): string[] {
  const origins = value
    .split(",")
    .map((origin) => origin.trim().replace(/\/$/, ""))
    .filter(Boolean);
  return origins.length > 0 ? origins : [""];
}

/**
 * Creates the CORS step of a server: call it before routing. It answers a preflight from an
 * allowed origin (204 with the allowed methods and headers) and returns true; for any other
 * request it adds the allow and expose headers when the origin is allowed and returns false.
 * A disallowed origin gets no CORS headers, so the browser blocks the call.
 */
export function createCorsHandler(options: CorsOptions): (req: HttpRequest, res: HttpResponse) => boolean {
  const { origins } = options;
  const anyOrigin = origins === "*";
  const allowed = new Set(origins === "*" ? [] : origins.map((origin) => origin.toLowerCase()));
  return (req, res) => {
    const origin = req.headers.origin;
    const isPreflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
    const isAllowed = origin !== undefined && (anyOrigin || allowed.has(origin.toLowerCase()));
    // Caches must not hand one origin's answer to another.
    if (!anyOrigin) res.setHeader("vary", "Origin");
    if (isAllowed) res.setHeader("access-control-allow-origin", anyOrigin ? "*" : origin);
    if (!isPreflight) {
      if (isAllowed) res.setHeader("access-control-expose-headers", exposedHeaders);
      return false;
    }
    if (isAllowed) {
      res.setHeader("access-control-allow-methods", allowedMethods);
      res.setHeader("access-control-allow-headers", allowedHeaders);
      res.setHeader("access-control-max-age", maxAgeSeconds);
    }
    res.statusCode = 204;
    res.end();
    return true;
  };
}
