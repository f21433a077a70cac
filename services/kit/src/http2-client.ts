import { Http2SessionManager } from "@connectrpc/connect-node";
import { type Endpoint, endpointConnection } from "./endpoints.js";

/** Options for {@link WideWindowSessionManager}. */
export interface WideWindowOptions {
  /** What the peer may send on one stream before it is read, in bytes. */
  streamWindowBytes: number;
  /** What the peer may send on the whole connection before it is read, in bytes; at least the stream window. */
  connectionWindowBytes: number;
  /** Closes the connection after this long without a stream, in ms. Default: Connect's (15 minutes). */
  idleConnectionTimeoutMs?: number;
}

/**
 * A Connect session manager whose HTTP/2 connections take large streams without waiting:
 * Node advertises a 64 KiB window per stream and keeps the connection's at 64 KiB whatever
 * the stream window, so a peer sending 64 KiB messages waits for a WINDOW_UPDATE round
 * trip before almost every one. Here both windows are as large as asked; they also bound
 * what this side holds for a stream it does not read.
 */
export class WideWindowSessionManager extends Http2SessionManager {
  private readonly connectionWindowBytes: number;
  /** Connections whose window has been widened already. */
  private readonly widened = new WeakSet<object>();

  /** `endpoint` is an `http://host:port` URL or a `unix:/path` socket (see {@link endpointConnection}). */
  constructor(endpoint: Endpoint, options: WideWindowOptions) {
    const connection = endpointConnection(endpoint);
    super(
      connection.origin,
      options.idleConnectionTimeoutMs === undefined ? {} : { idleConnectionTimeoutMs: options.idleConnectionTimeoutMs },
      { settings: { initialWindowSize: options.streamWindowBytes }, createConnection: () => connection.connect() },
    );
    this.connectionWindowBytes = Math.max(options.connectionWindowBytes, options.streamWindowBytes);
  }

  override async request(...args: Parameters<Http2SessionManager["request"]>) {
    const stream = await super.request(...args);
    const { session } = stream;
    if (session && !this.widened.has(session)) {
      session.setLocalWindowSize(this.connectionWindowBytes);
      this.widened.add(session);
    }
    return stream;
  }
}

/**
 * A Connect session manager for an endpoint in either form (`http://host:port` or
 * `unix:/path`), with Connect's defaults otherwise. Give it to connect-node's transports as
 * `sessionManager`, with `baseUrl` set to {@link endpointConnection}'s `origin`.
 */
export function endpointSessionManager(endpoint: Endpoint): Http2SessionManager {
  const connection = endpointConnection(endpoint);
  return new Http2SessionManager(connection.origin, {}, { createConnection: () => connection.connect() });
}
