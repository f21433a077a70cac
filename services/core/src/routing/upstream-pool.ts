/**
 * The repl origin's HTTP/2 connections to runners. A runner's HTTP/2 server (Node's, on
 * nghttp2) ends a whole connection, every stream on it, with GOAWAY INTERNAL_ERROR when
 * that connection brings it more than it will take: over 1,000 RST_STREAMs in a burst
 * (nghttp2's reset limit: a bucket of 1,000 refilled at 33 a second), or more than 100 new
 * streams refused once its session memory (10 MB) is full, which a few thousand streams
 * in flight on one connection reach. One shared connection per runner let any one client's
 * flood, or its cancelling of many calls at once, break every other client's streams.
 *
 * So each runner gets a small pool: a connection carries at most `maxStreamsPerConnection`
 * streams at once, and takes no new stream once the resets it has sent plus the streams it
 * carries reach `maxResetsPerConnection` (so even if every stream on it were cancelled, it
 * stays under the runner's limit, whatever the refill), nor after the runner refused a
 * stream or sent GOAWAY. Such a connection finishes its streams and closes; new calls go
 * to another, opened when none has room.
 */

import * as http2 from "node:http2";
import { endpointConnection } from "@devex/kit";
import type { Logger } from "pino";

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_REFUSED_STREAM } = http2.constants;

/** Options for {@link createUpstreamPool}. */
export interface UpstreamPoolOptions {
  logger: Logger;
  /** Streams one connection to a runner carries at once. Default 100. */
  maxStreamsPerConnection?: number;
  /**
   * Resets one connection may send in its life: it takes no new stream once the resets
   * it sent plus its open streams reach this. Default 500, half of nghttp2's burst.
   */
  maxResetsPerConnection?: number;
  /** A connection with no traffic for this long is closed, in ms. Default 300000. */
  idleConnectionMs?: number;
}

/** HTTP/2 connections to runners, several per runner as load needs. */
export interface UpstreamPool {
  /** Opens a stream to the runner at `endpoint` on a connection with room; throws when none can be opened. */
  request(
    endpoint: string,
    headers: http2.OutgoingHttpHeaders,
    options: http2.ClientSessionRequestOptions,
  ): http2.ClientHttp2Stream;
  /** Cancels a stream this pool opened (RST_STREAM CANCEL), counting the reset against its connection. */
  cancel(stream: http2.ClientHttp2Stream): void;
  /** Closes every connection, ending their streams. */
  close(): Promise<void>;
}

interface Connection {
  endpoint: string;
  session: http2.ClientHttp2Session;
  /** Streams open on it. */
  active: number;
  /** RST_STREAMs it has sent. */
  resets: number;
  /** Takes no new streams; closes once its last stream ends. */
  retired: boolean;
}

/** Creates the pool of connections to runners. */
export function createUpstreamPool(options: UpstreamPoolOptions): UpstreamPool {
  const logger = options.logger.child({ component: "repl-proxy" });
  const maxStreams = options.maxStreamsPerConnection ?? 100;
  const maxResets = Math.max(options.maxResetsPerConnection ?? 500, maxStreams);
  const idleConnectionMs = options.idleConnectionMs ?? 300_000;
  /** The connections to each runner, oldest first. */
  const pools = new Map<string, Connection[]>();
  const connectionOf = new WeakMap<http2.ClientHttp2Stream, Connection>();
  let closed = false;

  const usable = (c: Connection) => !c.retired && !c.session.closed && !c.session.destroyed;

  const retire = (connection: Connection, why: string) => {
    if (!connection.retired) {
      connection.retired = true;
      const { endpoint, active, resets } = connection;
      logger.debug({ endpoint, why, active, resets }, "runner connection retired");
    }
    if (connection.active === 0 && !connection.session.closed) connection.session.close();
  };

  const open = (endpoint: string): Connection => {
    const target = endpointConnection(endpoint);
    const session = http2.connect(target.origin, {
      // Keystrokes are small writes: no Nagle delay on the way to the runner either.
      createConnection: () => target.connect(),
      // The stream window bounds what core holds for a caller that does not read (Node
      // consumes the connection window at once, so a stalled stream blocks no other).
      settings: { enablePush: false, initialWindowSize: 1024 * 1024 },
    });
    const connection: Connection = { endpoint, session, active: 0, resets: 0, retired: false };
    const list = pools.get(endpoint) ?? [];
    list.push(connection);
    pools.set(endpoint, list);
    const forget = () => {
      const current = pools.get(endpoint);
      if (!current) return;
      const rest = current.filter((c) => c !== connection);
      if (rest.length > 0) pools.set(endpoint, rest);
      else pools.delete(endpoint);
    };
    session.once("connect", () => session.setLocalWindowSize(8 * 1024 * 1024));
    session.on("error", (error) => {
      connection.retired = true;
      logger.debug({ endpoint, err: error }, "runner connection failed");
    });
    session.once("goaway", (errorCode) => {
      if (errorCode !== http2.constants.NGHTTP2_NO_ERROR) {
        logger.warn({ endpoint, errorCode, active: connection.active }, "a runner ended a connection with an error");
      }
      retire(connection, "goaway");
    });
    session.once("close", forget);
    session.setTimeout(idleConnectionMs, () => retire(connection, "idle"));
    return connection;
  };

  return {
    request(endpoint, headers, requestOptions) {
      if (closed) throw new Error("the repl origin is shutting down");
      const fits = (c: Connection) => usable(c) && c.active < maxStreams && c.resets + c.active < maxResets;
      const connection = pools.get(endpoint)?.find(fits) ?? open(endpoint);
      const stream = connection.session.request(headers, requestOptions);
      connection.active++;
      connectionOf.set(stream, connection);
      stream.once("close", () => {
        connection.active--;
        // The runner refused the stream: this connection has brought it too much already.
        if (stream.rstCode === NGHTTP2_ENHANCE_YOUR_CALM || stream.rstCode === NGHTTP2_REFUSED_STREAM) {
          retire(connection, `stream refused (code ${stream.rstCode})`);
        } else if (connection.retired) {
          retire(connection, "finished");
        }
      });
      return stream;
    },
    cancel(stream) {
      if (stream.closed || stream.destroyed) return;
      const connection = connectionOf.get(stream);
      // A stream whose response has ended is over for the runner: closing it costs nothing
      // there (measured: 3,000 such closes in a row leave the connection up).
      if (connection && !stream.readableEnded) {
        connection.resets++;
        if (connection.resets + connection.active >= maxResets) retire(connection, "resets");
      }
      stream.close(NGHTTP2_CANCEL);
    },
    async close() {
      closed = true;
      const all = [...pools.values()].flat();
      pools.clear();
      await Promise.all(
        all.map(
          ({ session }) =>
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
