import * as net from "node:net";

/**
 * Where a service listens, as one string: `http://host:port` for TCP, or `unix:/abs/path`
 * for a Unix socket (gRPC's own naming). Core reaches sandboxed runners through Unix
 * sockets in a directory bound into their sandbox, so that no runner has a port on the
 * host's network.
 */
export type Endpoint = string;

/** How to reach an endpoint with node:http2 or node:http. */
export interface EndpointConnection {
  /** The origin to give HTTP clients (`http://localhost` for a Unix socket: the authority is not used to route). */
  origin: string;
  /** The Unix socket path, when the endpoint is one. */
  socketPath?: string;
  /** Opens a new connection to it (no Nagle delay: keystrokes are small writes). */
  connect(): net.Socket;
}

/** The endpoint of a Unix socket at `path` (absolute). */
export function unixEndpoint(path: string): Endpoint {
  return `unix:${path}`;
}

/** Parses an endpoint; throws a TypeError naming it when it is neither form. */
export function endpointConnection(endpoint: Endpoint): EndpointConnection {
  if (endpoint.startsWith("unix:")) {
    const socketPath = endpoint.slice("unix:".length);
    if (!socketPath.startsWith("/")) throw new TypeError(`not an absolute Unix socket endpoint: ${endpoint}`);
    return { origin: "http://localhost", socketPath, connect: () => net.connect({ path: socketPath }) };
  }
  const url = new URL(endpoint);
  if (url.protocol !== "http:") throw new TypeError(`not an http:// or unix: endpoint: ${endpoint}`);
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(url.port || 80);
  return { origin: url.origin, connect: () => net.connect({ host, port, noDelay: true }) };
}
