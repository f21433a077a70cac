import * as net from "node:net";

/** The loopback port programs in the sandbox use as their HTTP(S) proxy when egress is an allowlist. */
export const defaultEgressProxyPort = 3128;

/** Options of {@link startEgressForwarder}. */
export interface EgressForwarderOptions {
  /** The loopback port to listen on; default 3128; 0 picks a free one (tests). */
  listenPort?: number;
  /** The address to listen on; default 127.0.0.1 (the sandbox's only interface is loopback). */
  host?: string;
  /** The Unix socket of core's egress proxy, as bound into the sandbox. */
  socketPath: string;
  /** Most client connections at once, a bound on file descriptors; core's proxy enforces the real limit. */
  maxConnections?: number;
}

/** A running forwarder. */
export interface EgressForwarder {
  /** The port it listens on. */
  readonly port: number;
  /** Stops listening and cuts every forwarded connection. */
  close(): Promise<void>;
}

/** The answer to a client when core's proxy cannot be reached. */
function unreachableResponse(code: string): string {
  const body = `Devex egress forwarder: this repl's egress proxy is not reachable (${code})\n`;
  return `HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

/**
 * Starts the sandbox half of the egress path: a TCP listener on loopback whose every connection is
 * piped, byte for byte, to core's egress proxy through its Unix socket. The sandbox's network namespace
 * has no route out, so this is the only way out; what may pass is decided by core, outside the sandbox.
 */
export async function startEgressForwarder(options: EgressForwarderOptions): Promise<EgressForwarder> {
  const sockets = new Set<net.Socket>();
  const keep = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // Every error ends in "close", where the other side is cut.
    socket.on("error", () => {});
  };
  // Half-open on both sides, so that a client that ends its request still reads the whole response.
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    keep(client);
    const upstream = net.connect({ path: options.socketPath, allowHalfOpen: true });
    keep(upstream);
    let connected = false;
    upstream.once("connect", () => {
      connected = true;
      client.pipe(upstream);
      upstream.pipe(client);
      upstream.once("close", (hadError) => (hadError ? client.destroy() : client.end()));
    });
    // Core's proxy is gone (repl stopping, or a bug): say so in HTTP, which every client here speaks.
    upstream.once("error", (error: NodeJS.ErrnoException) => {
      if (!connected) client.end(unreachableResponse(error.code ?? "error"));
    });
    // pipe() ends each side when the other ends; an abrupt close of either cuts both.
    client.once("close", (hadError) => (hadError ? upstream.destroy() : upstream.end()));
  });
  server.maxConnections = options.maxConnections ?? 1024;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.listenPort ?? defaultEgressProxyPort, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    close: () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      return closed;
    },
  };
}

/**
 * The environment that points programs at the forwarder: both spellings of the proxy variables
 * (curl and Go read the lower-case ones first, npm and pip either), loopback exempt, and
 * NODE_USE_ENV_PROXY so that Node's own http and fetch honour them too.
 */
export function egressProxyEnvironment(port: number = defaultEgressProxyPort): Record<string, string> {
  const proxy = `http://127.0.0.1:${port}`;
  const noProxy = "localhost,127.0.0.1,::1";
  return {
    HTTP_PROXY: proxy,
    HTTPS_PROXY: proxy,
    http_proxy: proxy,
    https_proxy: proxy,
    NO_PROXY: noProxy,
    no_proxy: noProxy,
    NODE_USE_ENV_PROXY: "1",
  };
}
