import { chmod, lstat, unlink } from "node:fs/promises";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createContextKey,
  createContextValues,
  createServiceImplSpec,
  type Interceptor,
} from "@connectrpc/connect";
import { type ConnectNodeAdapterOptions, connectNodeAdapter } from "@connectrpc/connect-node";
import { createValidateInterceptor } from "@connectrpc/validate";
import type { Logger } from "pino";
import { type CorsOptions, createCorsHandler } from "./cors.js";
import { createErrorBoundsInterceptor } from "./error-bounds.js";
import { HealthRegistry, ServingStatus } from "./health.js";
import { createLoggingInterceptor } from "./logging.js";
import { createRpcMetrics, type RpcMetrics } from "./metrics.js";
import { readMaxBytesFor } from "./read-limits.js";
import { loadDescriptorSet, ReflectionIndex, reflectionRoutes } from "./reflection.js";

type NodeHandler = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
/** An HTTP/1.1 or HTTP/2 request, as Node's servers deliver it. */
export type HttpRequest = Parameters<NodeHandler>[0];
/** The response to an {@link HttpRequest}. */
export type HttpResponse = Parameters<NodeHandler>[1];

/** A plain HTTP handler for requests that are not RPCs (for example core's routing to runners). */
export type HttpFallback = (req: HttpRequest, res: HttpResponse) => boolean | Promise<boolean>;

/**
 * The address of the peer that sent an RPC (the TCP peer, never a header), for rate
 * limits and logs: `ctx.values.get(clientAddressKey)`.
 */
export const clientAddressKey = createContextKey<string>("", { description: "client address" });

/** Options for {@link startServer}. */
export interface ServerOptions {
  /** The service name used in logs and metrics (`core`, `runner`). */
  name: string;
  logger: Logger;
  /** The TCP port; 0 picks a free one. Required unless `path` is given. */
  port?: number;
  /** The address to listen on. Default `127.0.0.1`. */
  host?: string;
  /**
   * A Unix socket path to listen on instead of a TCP port (`port` and `host` are then
   * ignored). A stale socket left there is removed first; the socket is made 0600, so only
   * its owner (and root) can connect.
   */
  path?: string;
  /** Registers the service implementations. */
  routes: (router: ConnectRouter) => void;
  /**
   * Interceptors of the service (authentication, for example), run after logging and
   * metrics and before request validation, in the order given.
   */
  interceptors?: Interceptor[];
  /** Handles requests that no RPC matches; returns false to let the server answer 404. */
  fallback?: HttpFallback;
  /** How long shutdown waits for open calls to finish before cancelling them. Default 10 s. */
  shutdownGraceMs?: number;
  /**
   * Whether to compress messages (gzip, brotli) for clients that accept it. Default true.
   * The runner turns it off: its traffic is terminal bytes, where compression costs
   * latency, and file chunks, which are often compressed already.
   */
  compression?: boolean;
  /**
   * Lets pages of other origins call the server from a browser with a bearer token:
   * preflights are answered before routing and responses carry the CORS headers. Default
   * none: no CORS headers, browsers allow same-origin calls only.
   */
  cors?: CorsOptions;
}

/** A running server. */
export interface Server {
  /** The TCP port it listens on (useful when started on port 0); 0 on a Unix socket. */
  port: number;
  /** The Unix socket path it listens on, if it listens on one. */
  socket?: string;
  /** `http://host:port`, or `unix:<path>` on a Unix socket. */
  url: string;
  health: HealthRegistry;
  metrics: RpcMetrics;
  /** Open RPCs and other requests right now. */
  openRequests(): number;
  /**
   * Stops gracefully: reports NOT_SERVING, stops accepting connections, lets open calls
   * finish for up to the grace period, then cancels what is left and closes every
   * connection. Safe to call more than once.
   */
  close(graceMs?: number): Promise<void>;
}

const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * Starts a server that speaks the Connect, gRPC and gRPC-web protocols on one port, over
 * HTTP/1.1 and over HTTP/2 without TLS (h2c, "prior knowledge"), with health, reflection,
 * request validation, logging and Prometheus metrics on `/metrics`.
 */
export async function startServer(options: ServerOptions): Promise<Server> {
  const { logger } = options;
  const host = options.host ?? "127.0.0.1";
  const defaultGraceMs = options.shutdownGraceMs ?? 10_000;
  const health = new HealthRegistry();
  const metrics = createRpcMetrics(options.name);
  const shutdown = new AbortController();
  let index: ReflectionIndex | undefined;
  const serviceNames = new Set<string>();

  const handler = connectNodeAdapter({
    contextValues: (req) => createContextValues().set(clientAddressKey, req.socket?.remoteAddress ?? ""),
    routes(router) {
      const limited = withReadLimits(router);
      options.routes(limited);
      health.routes(limited);
      // The descriptors are read on the first reflection call: most servers never get one,
      // and they would hold several MB for nothing.
      reflectionRoutes(() => {
        index ??= new ReflectionIndex(loadDescriptorSet(), [...serviceNames]);
        return index;
      })(limited);
      for (const h of router.handlers) serviceNames.add(h.service.typeName);
    },
    interceptors: [
      createLoggingInterceptor(logger),
      // Inside logging, so that the log shows the error as the caller gets it (the cause keeps the whole).
      createErrorBoundsInterceptor(),
      metrics.interceptor,
      ...(options.interceptors ?? []),
      createValidateInterceptor(),
    ],
    shutdownSignal: shutdown.signal,
    ...(options.compression === false ? { acceptCompression: [] } : {}),
    fallback: (req, res) => void serveFallback(req, res),
  });

  async function serveFallback(req: HttpRequest, res: HttpResponse): Promise<void> {
    try {
      if (req.method === "GET" && req.url === "/metrics") {
        const body = await metrics.registry.metrics();
        res.statusCode = 200;
        res.setHeader("content-type", metrics.registry.contentType);
        res.end(body);
        return;
      }
      if (options.fallback && (await options.fallback(req, res))) return;
      res.statusCode = 404;
      res.setHeader("content-type", "text/plain; charset=utf-8");
      res.end("not found\n");
    } catch (error) {
      logger.error({ err: error, url: req.url }, "fallback handler failed");
      if (!res.headersSent) res.statusCode = 500;
      res.end();
    }
  }

  const applyCors = options.cors ? createCorsHandler(options.cors) : undefined;
  let open = 0;
  const track = (req: HttpRequest, res: HttpResponse) => {
    open++;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      open--;
      drained();
    };
    res.once("close", finish);
    res.once("finish", finish);
    if (applyCors?.(req, res)) return;
    handler(req, res);
  };

  const h1 = http.createServer({ requestTimeout: 0, keepAliveTimeout: 65_000 }, track);
  const h2 = http2.createServer({ settings: { initialWindowSize: 4 * 1024 * 1024 } }, track);
  const h2Sessions = new Set<http2.Http2Session>();
  h2.on("session", (session) => {
    h2Sessions.add(session);
    session.once("close", () => h2Sessions.delete(session));
    session.setLocalWindowSize?.(8 * 1024 * 1024);
  });
  const sockets = new Set<net.Socket>();
  const listener = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.setNoDelay(true);
    sniff(socket, (isH2) => (isH2 ? h2 : h1).emit("connection", socket));
  });

  const { path } = options;
  if (path === undefined && options.port === undefined) throw new Error("startServer: give a port or a path");
  if (path !== undefined) await listenOnSocket(listener, path, 0o600);
  else await listenAt(listener, { port: options.port, host });
  for (const name of serviceNames) health.set(name, ServingStatus.SERVING);
  health.set("", ServingStatus.SERVING);

  let drained: () => void = () => {};
  let closing: Promise<void> | undefined;
  const close = (graceMs = defaultGraceMs) => {
    closing ??= (async () => {
      health.setAll(ServingStatus.NOT_SERVING);
      listener.close();
      h1.closeIdleConnections();
      for (const session of h2Sessions) session.close();
      const idle = new Promise<void>((resolve) => {
        drained = () => {
          h1.closeIdleConnections();
          if (open === 0) resolve();
        };
        drained();
      });
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<"expired">((resolve) => {
        timer = setTimeout(() => resolve("expired"), graceMs);
      });
      if ((await Promise.race([idle, expired])) === "expired") {
        logger.warn({ open }, "shutdown grace period over; cancelling open calls");
        shutdown.abort(new ConnectError("server is shutting down", Code.Unavailable));
        await Promise.race([idle, new Promise((resolve) => setTimeout(resolve, 1_000))]);
      }
      clearTimeout(timer);
      for (const socket of sockets) socket.destroy();
      h1.close();
      h2.close();
    })();
    return closing;
  };

  const common = { health, metrics, openRequests: () => open, close };
  if (path !== undefined) {
    logger.info({ socket: path }, "listening");
    return { port: 0, socket: path, url: `unix:${path}`, ...common };
  }
  const address = listener.address() as net.AddressInfo;
  logger.info({ port: address.port, host }, "listening");
  return {
    port: address.port,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`,
    ...common,
  };
}

/**
 * A router that registers every method of a service with its own read limit
 * ({@link readMaxBytesFor}) unless the routes set one, so a request over it is refused
 * before it is buffered, and before any interceptor (authentication) runs.
 */
function withReadLimits(router: ConnectRouter): ConnectRouter {
  const limited: ConnectRouter = {
    handlers: router.handlers,
    service(service, implementation, serviceOptions) {
      for (const spec of Object.values(createServiceImplSpec(service, implementation).methods))
        router.rpc(spec.method, spec.impl as never, { readMaxBytes: readMaxBytesFor(spec.method), ...serviceOptions });
      return limited;
    },
    rpc(method, impl, methodOptions) {
      router.rpc(method, impl, { readMaxBytes: readMaxBytesFor(method), ...methodOptions });
      return limited;
    },
  };
  return limited;
}

/**
 * Makes `server` listen on the Unix socket `path` with file mode `mode` (its owner is the
 * process's user): a socket file left there by a server that did not close (a crash) is
 * replaced, anything else at `path` is left alone (listening then fails and says so).
 */
export async function listenOnSocket(server: net.Server, path: string, mode: number): Promise<void> {
  await removeStaleSocket(path);
  await listenAt(server, { path });
  await chmod(path, mode);
}

/** Resolves once `server` listens at `address`, or rejects with why it cannot. */
export function listenAt(server: net.Server, address: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(address, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/** Removes a socket file at `path` (and nothing else there); none is fine. */
async function removeStaleSocket(path: string): Promise<void> {
  const found = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  if (found?.isSocket()) await unlink(path);
}

/**
 * Tells an h2c connection (it opens with the HTTP/2 preface) from an HTTP/1.1 one by
 * its first bytes, then hands the socket on with those bytes put back.
 */
function sniff(socket: net.Socket, decide: (isH2: boolean) => void): void {
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    const n = Math.min(head.length, h2Preface.length);
    const isH2 = head.subarray(0, n).equals(h2Preface.subarray(0, n));
    if (isH2 && n < h2Preface.length) return;
    socket.off("data", onData);
    socket.pause();
    socket.unshift(head);
    decide(isH2);
    // The HTTP/2 session drains the buffered bytes itself when it takes the socket over;
    // the HTTP/1.1 parser reads them as the stream flows again.
    if (!isH2) socket.resume();
  };
  socket.on("data", onData);
}
