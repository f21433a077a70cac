/**
 * The repl origin: `<repl origin>/<repl id>/<service>/<method>` is forwarded to that repl's
 * runner as `/<service>/<method>`. Bodies stream through in both directions as they come
 * (bidirectional gRPC on h2c, server streams, Connect and gRPC-web over HTTP/1.1); the
 * runner checks the caller's token itself, so the proxy passes `authorization` and every
 * other end-to-end header on and only strips hop-by-hop ones.
 */

import type { ServerResponse } from "node:http";
import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, endStreamFlag, endStreamToJson, errorToJson } from "@connectrpc/connect/protocol-connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import {
  type CorsOptions,
  endpointConnection,
  type HttpFallback,
  type HttpRequest,
  type HttpResponse,
  type Server,
  startServer,
} from "@devex/kit";
import type { Logger } from "pino";

/** A path on the repl origin: `/<repl id>` and the rest, which goes to the runner. */
export const replPathPattern = /^\/(repl_[0-9a-z]{26})(\/.*)$/;

/** What the runner is asked for: an RPC path (`/<package>.<Service>/<Method>`), never its other routes (`/metrics`). */
const rpcPathPattern = /^\/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\/[A-Za-z_][A-Za-z0-9_]*$/;

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
 * Creates the repl proxy. Calls to one runner share one HTTP/2 connection, opened on the
 * first call, replaced after a GOAWAY or an error, closed when idle. A caller that goes
 * away cancels its upstream stream, and an upstream stream that fails ends the caller's.
 */
export function createReplProxy(options: ReplProxyOptions): ReplProxy {
  const logger = options.logger.child({ component: "repl-proxy" });
  const idleConnectionMs = options.idleConnectionMs ?? 300_000;
  /** The connection new calls to each runner go on. */
  const sessions = new Map<string, http2.ClientHttp2Session>();
  /** Every open connection, including ones draining after a GOAWAY. */
  const open = new Set<http2.ClientHttp2Session>();
  let closed = false;

  const sessionFor = (endpoint: string): http2.ClientHttp2Session => {
    const existing = sessions.get(endpoint);
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const connection = endpointConnection(endpoint);
    const session = http2.connect(connection.origin, {
      // Keystrokes are small writes: no Nagle delay on the way to the runner either.
      createConnection: () => connection.connect(),
      // The stream window bounds what core holds for a caller that does not read (Node
      // consumes the connection window at once, so a stalled stream blocks no other).
      settings: { enablePush: false, initialWindowSize: 1024 * 1024 },
    });
    sessions.set(endpoint, session);
    open.add(session);
    const forget = () => {
      if (sessions.get(endpoint) === session) sessions.delete(endpoint);
    };
    session.once("connect", () => session.setLocalWindowSize(8 * 1024 * 1024));
    session.on("error", (error) => {
      forget();
      logger.debug({ endpoint, err: error }, "runner connection failed");
    });
    session.once("goaway", forget);
    session.once("close", () => {
      forget();
      open.delete(session);
    });
    session.setTimeout(idleConnectionMs, () => {
      forget();
      session.close();
    });
    return session;
  };

  const forward = async (req: HttpRequest, res: HttpResponse, replId: string, path: string): Promise<void> => {
    const log = logger.child({ replId, path });
    const isH2 = req.httpVersionMajor === 2;
    const startedAt = performance.now();
    let upstream: http2.ClientHttp2Stream | undefined;
    let callerGone = false;
    req.on("error", () => {});
    res.on("error", () => {});
    // The caller went away (RST_STREAM, closed connection) or the call is over: either
    // way the upstream stream has nothing more to do.
    res.once("close", () => {
      callerGone = true;
      if (upstream && !upstream.closed && !upstream.destroyed) upstream.close(NGHTTP2_CANCEL);
    });
    let endpoint: string | undefined;
    try {
      if (closed) throw new ConnectError("the repl origin is shutting down", Code.Unavailable);
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
      ...endToEndHeaders(req.headers),
      [http2.constants.HTTP2_HEADER_METHOD]: req.method ?? "POST",
      [http2.constants.HTTP2_HEADER_PATH]: path,
    };
    const hasBody = req.method !== "GET" && req.method !== "HEAD";
    let stream: http2.ClientHttp2Stream;
    try {
      stream = sessionFor(endpoint).request(headers, { endStream: !hasBody });
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
      sessions.clear();
      await Promise.all(
        [...open].map(
          (session) =>
            new Promise<void>((resolve) => {
              if (session.destroyed) return resolve();
              session.once("close", () => resolve());
              session.destroy();
            }),
        ),
      );
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
