/**
 * The repl origin: `<repl origin>/<repl id>/<service>/<method>` is forwarded to that repl's
 * runner as `/<service>/<method>`. Bodies stream through in both directions as they come
 * (bidirectional gRPC on h2c, server streams, Connect and gRPC-web over HTTP/1.1); the
 * runner checks the caller's token itself, so the proxy passes a runner token in
 * `authorization` and the other end-to-end headers on, and strips hop-by-hop ones and every
 * other credential (see {@link withoutCredentials}). Calls in flight are limited
 * per client and per repl (see call-limits.ts), and travel on a pool of connections per
 * runner that no one client can break for the others (see upstream-pool.ts).
 */

import { createHash } from "node:crypto";
import type { ServerResponse } from "node:http";
import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, endStreamFlag, endStreamToJson, errorToJson } from "@connectrpc/connect/protocol-connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import {
  type CorsOptions,
  type HttpFallback,
  type HttpRequest,
  type HttpResponse,
  type Server,
  startServer,
} from "@devex/kit";
import type { Logger } from "pino";
import { createCallLimits } from "./call-limits.js";
import { createUpstreamPool } from "./upstream-pool.js";

/** A path on the repl origin: `/<repl id>` and the rest, which goes to the runner. */
export const replPathPattern = /^\/(repl_[0-9a-z]{26})(\/.*)$/;

/** What the runner is asked for: an RPC path (`/<package>.<Service>/<Method>`), never its other routes (`/metrics`). */
const rpcPathPattern = /^\/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\/[A-Za-z_][A-Za-z0-9_]*$/;

/** The runner's services that take calls without a token (health, reflection): the rest needs one. */
const openServicePattern = /^\/grpc\.(health\.v1\.Health|reflection\.v1(alpha)?\.ServerReflection)\//;

/** Headers that describe one connection, not the call (RFC 9110 7.6.1), or that HTTP/2 forbids. */
const hopByHopHeaders = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "te",
  "host",
  "http2-settings",
  "expect",
  "trailer",
]);

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM, NGHTTP2_INTERNAL_ERROR } = http2.constants;

/** The one credential a runner takes: `Authorization: Bearer <runner token>`, a JWT (three base64url parts). */
const runnerTokenPattern = /^\s*Bearer +[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\s*$/i;

/** Default of {@link ReplProxyOptions.maxCallsPerClient}. */
const defaultMaxCallsPerClient = 256;
/** Default of {@link ReplProxyOptions.maxCallsPerRepl}. */
const defaultMaxCallsPerRepl = 1024;

/** Options for {@link createReplProxy}. */
export interface ReplProxyOptions {
  /**
   * The runner endpoint (`http://host:port`) of a running repl. Undefined answers NotFound;
   * a thrown ConnectError answers with its code (Unavailable for a stopped repl, say).
   */
  resolve: (replId: string) => Promise<string | undefined>;
  logger: Logger;
  /** An HTTP/2 connection to a runner with no traffic for this long is closed, in ms. Default 300000. */
  idleConnectionMs?: number;
  /**
   * Calls one client (one bearer token, or one address for calls without a token) may have
   * in flight at once; more are refused with ResourceExhausted. Default 256.
   */
  maxCallsPerClient?: number;
  /** Calls one repl may have in flight at once, from all its clients; more are refused with ResourceExhausted. Default 1024. */
  maxCallsPerRepl?: number;
  /** Streams one HTTP/2 connection to a runner carries at once; a runner gets more connections as needed. Default 100. */
  maxStreamsPerConnection?: number;
}

/** Core's router from the repl origin to runners. */
export interface ReplProxy {
  /** Serves paths under `/<repl id>/`; returns false for every other path. */
  handle: HttpFallback;
  /** Ends every proxied call and closes the connections to runners. */
  close(): Promise<void>;
}

/** The protocol of a call, for answering errors the caller can read. */
type Protocol = "grpc" | "grpc-web" | "connect-stream" | "connect-unary";

/**
 * Creates the repl proxy. Calls to a runner go over a small pool of HTTP/2 connections,
 * opened as needed, replaced after a GOAWAY or an error, closed when idle. A caller that
 * goes away cancels its upstream stream, and an upstream stream that fails ends the caller's.
 */
export function createReplProxy(options: ReplProxyOptions): ReplProxy {
  const logger = options.logger.child({ component: "repl-proxy" });
  const limits = createCallLimits({
    maxCallsPerClient: options.maxCallsPerClient ?? defaultMaxCallsPerClient,
    maxCallsPerRepl: options.maxCallsPerRepl ?? defaultMaxCallsPerRepl,
  });
  const pool = createUpstreamPool({
    logger: options.logger,
    ...(options.idleConnectionMs !== undefined ? { idleConnectionMs: options.idleConnectionMs } : {}),
    ...(options.maxStreamsPerConnection !== undefined
      ? { maxStreamsPerConnection: options.maxStreamsPerConnection }
      : {}),
  });
  let closed = false;

  const forward = async (req: HttpRequest, res: HttpResponse, replId: string, path: string): Promise<void> => {
    const log = logger.child({ replId, path });
    const isH2 = req.httpVersionMajor === 2;
    const startedAt = performance.now();
    let upstream: http2.ClientHttp2Stream | undefined;
    let callerGone = false;
    let release: () => void = () => {};
    req.on("error", () => {});
    res.on("error", () => {});
    // The caller went away (RST_STREAM, closed connection) or the call is over: either
    // way the upstream stream has nothing more to do.
    res.once("close", () => {
      callerGone = true;
      release();
      if (upstream) pool.cancel(upstream);
    });
    let endpoint: string | undefined;
    try {
      if (closed) throw new ConnectError("the repl origin is shutting down", Code.Unavailable);
      release = limits.admit(clientOf(req), replId);
      endpoint = await options.resolve(replId);
    } catch (error) {
      const ce = ConnectError.from(error);
      if (!(error instanceof ConnectError)) log.error({ err: error }, "resolving a repl failed");
      respondError(req, res, ce);
      return;
    }
    if (!endpoint) {
      respondError(req, res, new ConnectError(`repl ${replId} was not found or is not running`, Code.NotFound));
      return;
    }
    if (callerGone) return;

    const headers: http2.OutgoingHttpHeaders = {
      ...withoutCredentials(endToEndHeaders(req.headers)),
      [http2.constants.HTTP2_HEADER_METHOD]: req.method ?? "POST",
      [http2.constants.HTTP2_HEADER_PATH]: path,
    };
    const hasBody = req.method !== "GET" && req.method !== "HEAD";
    let stream: http2.ClientHttp2Stream;
    try {
      stream = pool.request(endpoint, headers, { endStream: !hasBody });
    } catch (error) {
      respondError(req, res, unreachable(replId, error));
      return;
    }
    upstream = stream;

    let responded = false;
    let ended = false;
    let status = 0;
    let upstreamError: unknown;
    stream.on("error", (error) => {
      upstreamError = error;
    });
    stream.once("response", (upstreamHeaders, flags) => {
      responded = true;
      if (res.destroyed || res.writableEnded) return;
      status = Number(upstreamHeaders[http2.constants.HTTP2_HEADER_STATUS] ?? 502);
      const responseHeaders = endToEndHeaders(upstreamHeaders);
      // A runner sets no cookie: one for this host could replace the browser's core session.
      delete responseHeaders["set-cookie"];
      if (flags & NGHTTP2_FLAG_END_STREAM) {
        // A trailers-only response (a gRPC error, say) stays one: headers that end the stream.
        ended = true;
        stream.resume();
        for (const [name, value] of Object.entries(responseHeaders))
          if (value !== undefined) res.setHeader(name, value);
        res.statusCode = status;
        res.end();
        return;
      }
      res.writeHead(status, responseHeaders);
      // Headers go out now, not with the first message: a stream may stay silent for a while.
      if (!isH2) (res as ServerResponse).flushHeaders();
      stream.pipe(res);
    });
    stream.on("trailers", (trailers) => {
      if (isH2) (res as http2.Http2ServerResponse).addTrailers(endToEndHeaders(trailers) as Record<string, string>);
    });
    stream.once("end", () => {
      ended = true;
    });
    stream.once("close", () => {
      log.debug(
        { status, rstCode: stream.rstCode, durationMs: Math.round(performance.now() - startedAt) },
        "proxied call ended",
      );
      if (!responded) {
        respondError(req, res, unreachable(replId, upstreamError ?? `stream reset (code ${stream.rstCode})`));
        return;
      }
      // Ended means the runner's whole response (and its trailers) arrived; a reset after that changes nothing.
      if (!ended && !res.writableEnded) {
        log.debug({ rstCode: stream.rstCode, err: upstreamError }, "upstream stream failed; ending the caller's");
        // CANCEL would tell the caller it canceled: it did not, the runner's side broke.
        const code = stream.rstCode;
        abortResponse(res, code && code !== NGHTTP2_CANCEL ? code : NGHTTP2_INTERNAL_ERROR);
      }
    });
    if (hasBody) req.pipe(stream);
  };

  const handle: HttpFallback = (req, res) => {
    const match = replPathPattern.exec(req.url ?? "");
    if (!match) return false;
    const replId = match[1] as string;
    const rest = match[2] as string;
    const queryAt = rest.indexOf("?");
    if (!rpcPathPattern.test(queryAt < 0 ? rest : rest.slice(0, queryAt))) {
      res.statusCode = 404;
      res.setHeader("content-type", "text/plain; charset=utf-8");
      res.end("not found: the repl origin serves /<repl id>/<service>/<method>\n");
      return true;
    }
    // The runner would refuse a call without a token anyway; refusing it here, before its
    // body is forwarded, keeps anyone who knows a repl's id from pushing bytes into its runner.
    if (!req.headers.authorization && !openServicePattern.test(rest)) {
      const error = new ConnectError(
        "a runner token is required (authorization: Bearer <token>)",
        Code.Unauthenticated,
      );
      respondError(req, res, error);
      return true;
    }
    forward(req, res, replId, rest).catch((error: unknown) => {
      logger.error({ err: error, replId, url: req.url }, "proxying a call failed");
      if (!res.headersSent) respondError(req, res, new ConnectError("proxy failure", Code.Internal));
      else abortResponse(res, NGHTTP2_INTERNAL_ERROR);
    });
    return true;
  };

  return {
    handle,
    async close() {
      closed = true;
      await pool.close();
    },
  };
}

/** Options for {@link startReplOrigin}. */
export interface ReplOriginOptions {
  /** The TCP port; 0 picks a free one. */
  port: number;
  /** The address to listen on. Default `127.0.0.1`. */
  host?: string;
  logger: Logger;
  proxy: ReplProxy;
  /** How long shutdown lets proxied calls finish before cutting them, in ms. Default 10000. */
  shutdownGraceMs?: number;
  /** Web origins allowed to call repls from a browser (preflights are answered here, not by runners). Default none. */
  cors?: CorsOptions;
}

/**
 * Starts the repl origin: a kit server with no services of its own (health and reflection
 * describe the origin itself) whose every `/<repl id>/...` request goes through the proxy.
 */
export function startReplOrigin(options: ReplOriginOptions): Promise<Server> {
  return startServer({
    name: "repl-origin",
    logger: options.logger,
    port: options.port,
    ...(options.host !== undefined ? { host: options.host } : {}),
    ...(options.shutdownGraceMs !== undefined ? { shutdownGraceMs: options.shutdownGraceMs } : {}),
    ...(options.cors !== undefined ? { cors: options.cors } : {}),
    routes: () => {},
    fallback: options.proxy.handle,
  });
}

/**
 * The headers of a request or response minus pseudo-headers, hop-by-hop and CORS ones
 * (`te: trailers` stays).
 */
function endToEndHeaders(incoming: http2.IncomingHttpHeaders): http2.OutgoingHttpHeaders {
  const listed = new Set(
    String(incoming.connection ?? "")
      .split(",")
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: http2.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || name.startsWith(":")) continue;
    if (hopByHopHeaders.has(name) || name.startsWith("proxy-") || listed.has(name)) continue;
    // The repl origin's CORS policy applies, never a runner's.
    if (name.startsWith("access-control-")) continue;
    out[name] = value;
  }
  if (/(^|,)\s*trailers\s*(,|;|$)/i.test(String(incoming.te ?? ""))) out.te = "trailers";
  return out;
}

/**
 * Request headers without any credential but a runner token: a runner is its repl owner's
 * process. Cookies go (by default the repl origin shares its host with the API, and cookies are
 * not scoped by port, so the browser sends core's `devex_session` here too), and so does an
 * `authorization` that is no runner token (a Devex API key, Basic credentials);
 * `proxy-authorization` went with the hop-by-hop headers.
 */
function withoutCredentials(headers: http2.OutgoingHttpHeaders): http2.OutgoingHttpHeaders {
  const out = { ...headers };
  delete out.cookie;
  if (!runnerTokenPattern.test(String(out.authorization ?? ""))) delete out.authorization;
  return out;
}

/**
 * Who a call counts against for {@link ReplProxyOptions.maxCallsPerClient}: its bearer
 * token (a digest of the header, so the limits hold no credential), or its address when it
 * has none (health, reflection).
 */
function clientOf(req: HttpRequest): string {
  const authorization = req.headers.authorization;
  if (authorization) return `token:${createHash("sha256").update(authorization).digest("base64url")}`;
  return `address:${req.socket?.remoteAddress ?? ""}`;
}

function protocolOf(req: HttpRequest): Protocol {
  const contentType = String(req.headers["content-type"] ?? "").toLowerCase();
  if (contentType.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType.startsWith("application/grpc")) return "grpc";
  if (contentType.startsWith("application/connect+")) return "connect-stream";
  return "connect-unary";
}

function unreachable(replId: string, cause: unknown): ConnectError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new ConnectError(`the runner of ${replId} is unreachable: ${reason}`, Code.Unavailable, undefined, [], cause);
}

/**
 * Answers a call with an error in its own protocol: gRPC and gRPC-web get a trailers-only
 * response (HTTP 200, `grpc-status`), Connect streams an end-stream message, Connect
 * unary calls (and plain HTTP) the JSON error with its HTTP status.
 */
function respondError(req: HttpRequest, res: HttpResponse, error: ConnectError): void {
  if (res.headersSent || res.writableEnded || res.destroyed) {
    abortResponse(res, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  const contentType = String(req.headers["content-type"] ?? "");
  switch (protocolOf(req)) {
    case "grpc":
    case "grpc-web": {
      res.statusCode = 200;
      res.setHeader("content-type", contentType);
      setTrailerStatus(new Headers(), error).forEach((value, name) => {
        res.setHeader(name, value);
      });
      res.end();
      return;
    }
    case "connect-stream": {
      const json = JSON.stringify(endStreamToJson(new Headers(), error, undefined));
      res.statusCode = 200;
      res.setHeader("content-type", contentType);
      res.end(encodeEnvelope(endStreamFlag, new TextEncoder().encode(json)));
      return;
    }
    case "connect-unary":
      res.statusCode = codeToHttpStatus(error.code);
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(errorToJson(error, undefined)));
  }
}

/** Ends a response that cannot finish: an HTTP/2 stream is reset, an HTTP/1.1 connection closed. */
function abortResponse(res: HttpResponse, code: number): void {
  if ("stream" in res && res.stream) {
    if (!res.stream.closed && !res.stream.destroyed) res.stream.close(code);
    return;
  }
  res.destroy();
}
