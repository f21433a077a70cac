// The egress proxy is written on node:http and node:net rather than on a proxy library: `proxy`
// (proxy-agents) dials `net.connect(host)` itself, a second DNS lookup we could not pin to the checked
// address, and has no per-destination hook besides 407 authentication, no tunnel limit and stack traces
// in its error bodies; http-proxy-3 is a reverse proxy to a fixed target and does not serve CONNECT.
// What we add to node is small: parse the target, decide, dial the resolved address, pipe.
import { lookup as dnsLookup } from "node:dns/promises";
import { chown, rm } from "node:fs/promises";
import * as http from "node:http";
import * as net from "node:net";
import { listenOnSocket } from "@devex/kit";
import type { Logger } from "pino";
import { classifyAddress } from "./addresses.js";
import { Allowlist, normalizeHost, parsePort } from "./allowlist.js";
import {
  addressProhibited,
  badTarget,
  connectionLimit,
  notListed,
  type Refusal,
  refusalBytes,
  refusalResponse,
  upstreamFailed,
} from "./refusals.js";

/** A destination the proxy decided to reach: the host as requested and the one address it resolved to. */
export interface EgressTarget {
  host: string;
  address: string;
  port: number;
}

/** Opens a TCP connection to `target.address` (never to `target.host`: that would be a second lookup). */
export type EgressConnect = (target: EgressTarget) => net.Socket;

/** Resolves a host name to its addresses (all of them, in the resolver's order). */
export type EgressLookup = (hostname: string) => Promise<ReadonlyArray<{ address: string; family: number }>>;

/** Options of {@link createEgressProxy}. */
export interface EgressProxyOptions {
  /** The Unix socket to listen on, in the sandbox's host run directory; a stale file there is replaced. */
  socketPath: string;
  /** Allowlist entries: `host`, `*.domain`, IP literals, each optionally with `:port` (see allowlist.ts). */
  allow: readonly string[];
  logger: Logger;
  /** The sandbox's uid: the socket is chowned to it (mode 0600), so only that uid and root can connect. */
  uid?: number;
  /** The group to chown the socket to along with `uid`; unchanged when omitted. */
  gid?: number;
  /** Most connections (CONNECT tunnels plus in-flight plain HTTP requests) at once; default 256. */
  maxConnections?: number;
  /** Most bytes of request headers a client may send; default 16 KiB. Larger gets 431. */
  maxHeaderBytes?: number;
  /** A connection with no bytes either way for this long is closed; default 300 000 (5 minutes). */
  idleTimeoutMs?: number;
  /** Bounds the name lookup and, separately, the TCP connect to the destination; default 10 000. */
  connectTimeoutMs?: number;
  /** Replaces the system resolver (tests map names to addresses with it). */
  lookup?: EgressLookup;
  /** Replaces `net.connect` to the resolved address (tests, or a deployment that dials through something). */
  connect?: EgressConnect;
}

/** A running egress proxy for one sandbox. */
export interface EgressProxy {
  readonly socketPath: string;
  /** Connections counted against `maxConnections` right now. */
  activeConnections(): number;
  /** Stops listening, cuts every connection and removes the socket file. */
  close(): Promise<void>;
}

/** Headers that describe one hop and are not forwarded (RFC 9110 §7.6.1), plus the proxy's own. */
const hopByHop = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** Copies raw headers without hop-by-hop ones (including those the Connection header names). */
function endToEndHeaders(raw: readonly string[]): Record<string, string[]> {
  const named = new Set(hopByHop);
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]?.toLowerCase() === "connection") {
      for (const token of raw[i + 1]?.split(",") ?? []) named.add(token.trim().toLowerCase());
    }
  }
  const headers: Record<string, string[]> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? "";
    if (named.has(name.toLowerCase())) continue;
    headers[name] ??= [];
    headers[name].push(raw[i + 1] ?? "");
  }
  return headers;
}

/** Splits a CONNECT authority (`host:port`, `[v6]:port`); the port is required. */
function parseAuthority(authority: string): { host: string; port: number } | undefined {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^\s[\]:/@]+):(\d+)$/.exec(authority);
  const port = match?.[2] === undefined ? undefined : parsePort(match[2]);
  return match?.[1] === undefined || port === undefined ? undefined : { host: match[1], port };
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, code: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`timed out after ${timeoutMs} ms`), { code })), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const defaultLookup: EgressLookup = (hostname) => dnsLookup(hostname, { all: true, order: "verbatim" });
const defaultConnect: EgressConnect = (target) =>
  net.connect({ host: target.address, port: target.port, allowHalfOpen: true });

/**
 * Starts the HTTP/HTTPS egress proxy of one sandbox on a Unix socket. Programs in the sandbox reach it
 * through the runner's forwarder; it carries `CONNECT host:port` tunnels and absolute-form `http://`
 * requests to allowed destinations, streaming both ways, and answers everything else with a one-line
 * refusal (403 for the allowlist, 429 at the connection limit) and a log line.
 *
 * A name on the list is resolved once and the connection goes to that address; an address that is
 * loopback, link-local (cloud metadata), private or otherwise not public is refused unless the
 * allowlist names that IP literally, so a listed name that resolves to 127.0.0.1 cannot reach core.
 */
export async function createEgressProxy(options: EgressProxyOptions): Promise<EgressProxy> {
  const allowlist = Allowlist.parse(options.allow);
  const { socketPath, logger } = options;
  const maxConnections = options.maxConnections ?? 256;
  const idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  const lookup = options.lookup ?? defaultLookup;
  const connect = options.connect ?? defaultConnect;
  if (Buffer.byteLength(socketPath) > 107) {
    throw new Error(`egress proxy socket path is longer than a Unix socket allows (107 bytes): ${socketPath}`);
  }

  let active = 0;
  /** Sockets node:http no longer tracks (CONNECT clients) and every upstream socket, cut on close. */
  const detached = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    detached.add(socket);
    socket.once("close", () => detached.delete(socket));
  };
  /** Takes one connection slot; the returned release is idempotent. */
  const takeSlot = (): (() => void) | undefined => {
    if (active >= maxConnections) return undefined;
    active++;
    let released = false;
    return () => {
      if (!released) active--;
      released = true;
    };
  };

  const refused = (refusal: Refusal, fields: Record<string, unknown>) => {
    const level = refusal.status === 403 || refusal.status === 429 ? "warn" : "info";
    logger[level]({ ...fields, status: refusal.status, reason: refusal.proxyStatus }, refusal.message);
    return refusal;
  };

  /** Decides whether `host:port` may be reached and, for a name, resolves it exactly once. */
  const decide = async (rawHost: string, port: number): Promise<EgressTarget | Refusal> => {
    const host = normalizeHost(rawHost);
    if (host === undefined) return badTarget(`${JSON.stringify(rawHost)} is not a host name or IP address`);
    if (!allowlist.allowsHost(host, port)) return notListed(host, port);
    // A literal IP passed allowsHost only by being listed literally: it may be private.
    if (net.isIP(host) !== 0) return { host, address: host, port };
    let addresses: ReadonlyArray<{ address: string }>;
    try {
      addresses = await withTimeout(lookup(host), connectTimeoutMs, "EAI_AGAIN");
    } catch (error) {
      return upstreamFailed(host, port, error);
    }
    const candidates = addresses.map(({ address }) => normalizeHost(address) ?? address);
    const usable = candidates.find(
      (address) => classifyAddress(address) === "public" || allowlist.allowsAddress(address, port),
    );
    if (usable !== undefined) return { host, address: usable, port };
    const first = candidates[0];
    if (first === undefined) return upstreamFailed(host, port, { code: "ENOTFOUND" });
    return addressProhibited(host, first, classifyAddress(first));
  };

  /** Dials the target and fails the socket with ETIMEDOUT if it does not connect in time. */
  const dial = (target: EgressTarget): net.Socket => {
    const socket = connect(target);
    track(socket);
    if (socket.connecting) {
      const timer = setTimeout(
        () => socket.destroy(Object.assign(new Error("connect timed out"), { code: "ETIMEDOUT" })),
        connectTimeoutMs,
      );
      socket.once("connect", () => clearTimeout(timer));
      socket.once("close", () => clearTimeout(timer));
    }
    socket.setTimeout(idleTimeoutMs, () => socket.destroy());
    return socket;
  };

  const onConnect = async (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    track(client);
    // Bytes a client sends before our answer (an eager TLS hello) wait here until the tunnel is piped.
    client.pause();
    let tunnel: net.Socket | undefined;
    client.on("error", () => client.destroy());
    client.setTimeout(idleTimeoutMs, () => {
      client.destroy();
      tunnel?.destroy();
    });
    const fields = { method: "CONNECT", target: req.url };
    // Answer, then read on (discarding) so that the client's own close is seen and frees the slot.
    const answer = (refusal: Refusal, more: object = {}) => {
      client.end(refusalBytes(refused(refusal, { ...fields, ...more })));
      client.resume();
    };
    const authority = parseAuthority(req.url ?? "");
    if (authority === undefined) {
      answer(badTarget("CONNECT needs host:port"));
      return;
    }
    const release = takeSlot();
    if (release === undefined) {
      answer(connectionLimit(maxConnections));
      return;
    }
    client.once("close", release);
    const decision = await decide(authority.host, authority.port);
    if (client.destroyed) return;
    if (!("address" in decision)) {
      answer(decision, authority);
      return;
    }
    const upstream = dial(decision);
    tunnel = upstream;
    let established = false;
    upstream.on("error", (error) => {
      if (established) {
        client.destroy();
        return;
      }
      answer(upstreamFailed(decision.host, decision.port, error), decision);
    });
    upstream.once("connect", () => {
      established = true;
      logger.debug({ ...fields, ...decision }, "egress tunnel opened");
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    // A clean close has already ended the other side through pipe; an abrupt one cuts it. Before the
    // tunnel is established, the error handler above answers instead.
    upstream.once("close", (hadError) => {
      if (established) hadError ? client.destroy() : client.end();
    });
    client.once("close", (hadError) => (hadError ? upstream.destroy() : upstream.end()));
  };

  const onRequest = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const fields = { method: req.method, target: req.url };
    const respond = (refusal: Refusal) => {
      const { headers, body } = refusalResponse(refused(refusal, fields));
      res.writeHead(refusal.status, headers).end(body);
    };
    let url: URL | undefined;
    try {
      url = req.url?.startsWith("http://") ? new URL(req.url) : undefined;
    } catch {}
    if (url === undefined) {
      return respond(badTarget("send absolute-form http:// requests here, and CONNECT host:port for https"));
    }
    const release = takeSlot();
    if (release === undefined) return respond(connectionLimit(maxConnections));
    res.once("close", release);
    const port = url.port === "" ? 80 : Number(url.port);
    const decision = await decide(url.hostname, port);
    if (res.destroyed) return;
    if (!("address" in decision)) return respond(decision);
    const headers = endToEndHeaders(req.rawHeaders);
    // RFC 9112 §3.2.2: a request in absolute form is for the URL's authority, whatever Host says.
    for (const name of Object.keys(headers)) if (name.toLowerCase() === "host") delete headers[name];
    headers.host = [url.host];
    const upstreamReq = http.request({
      method: req.method,
      path: `${url.pathname}${url.search}`,
      headers,
      createConnection: () => dial(decision),
    });
    logger.debug({ ...fields, ...decision }, "egress request forwarded");
    upstreamReq.on("response", (upstreamRes) => {
      res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, endToEndHeaders(upstreamRes.rawHeaders));
      upstreamRes.pipe(res);
      upstreamRes.on("error", () => res.destroy());
    });
    upstreamReq.on("error", (error) => {
      if (res.headersSent) res.destroy();
      else respond(upstreamFailed(decision.host, decision.port, error));
    });
    res.once("close", () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    req.pipe(upstreamReq);
  };

  const server = http.createServer({
    maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024,
    headersTimeout: Math.min(30_000, idleTimeoutMs),
    // Uploads through the proxy may stream for long; idleness (server.timeout) bounds them instead.
    requestTimeout: 0,
    keepAliveTimeout: 5_000,
  });
  server.timeout = idleTimeoutMs;
  // Client sockets idle between keep-alive requests do not count as connections; this caps them too.
  server.maxConnections = 2 * maxConnections;
  // A throw here would be a bug of ours: log it and cut that one connection, never crash core.
  const bug = (socket: { destroy(): void }, target: string | undefined) => (error: unknown) => {
    logger.error({ err: error, target }, "egress proxy failed to handle a request");
    socket.destroy();
  };
  server.on("request", (req, res) => onRequest(req, res).catch(bug(res, req.url)));
  server.on("connect", (req, socket, head) => onConnect(req, socket as net.Socket, head).catch(bug(socket, req.url)));
  server.on("upgrade", (req, socket) => {
    socket.on("error", () => socket.destroy());
    const refusal = badTarget("upgrades (WebSocket) over plain HTTP are not proxied; use CONNECT host:port");
    socket.end(refusalBytes(refused(refusal, { method: req.method, target: req.url })));
  });

  await listenOnSocket(server, socketPath, 0o600);
  server.on("error", (error) => logger.error({ err: error, socketPath }, "egress proxy server error"));
  try {
    if (options.uid !== undefined) await chown(socketPath, options.uid, options.gid ?? -1);
  } catch (error) {
    server.close();
    await rm(socketPath, { force: true });
    throw new Error(`egress proxy socket ${socketPath} could not be handed to uid ${options.uid}`, { cause: error });
  }
  logger.info({ socketPath, allow: options.allow, maxConnections }, "egress proxy listening");

  return {
    socketPath,
    activeConnections: () => active,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      for (const socket of detached) socket.destroy();
      await closed;
      await rm(socketPath, { force: true });
    },
  };
}
