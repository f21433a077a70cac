/**
 * The runner's preview proxy: core's preview origin forwards a browser's requests for a repl's
 * web app here (over a Unix socket in the sandbox's run directory), naming the app's port in
 * `x-devex-preview-port`; this proxy passes them on to `http://127.0.0.1:<port>` inside the
 * sandbox. Bodies stream both ways as they come (server-sent events are never held back) and
 * WebSocket upgrades are piped both ways. Core has checked who may open the preview; the
 * sandbox's network namespace keeps every other port of the host out of reach.
 */

import { unlink } from "node:fs/promises";
import * as http from "node:http";
import type { Duplex } from "node:stream";
import { listenAt, listenOnSocket, refuseUpgrade, sendHtmlPage } from "@devex/kit";
import { createProxyServer } from "http-proxy-3";
import type { Logger } from "pino";
import type { Activity } from "../activity.js";

/** The header core sets to the app's port inside the repl. */
export const previewPortHeader = "x-devex-preview-port";

/** Options for {@link startPreviewProxy}. */
export interface PreviewProxyOptions {
  /** A Unix socket to listen on (replaced if a stale one is there). */
  socketPath?: string;
  /** A loopback TCP port to listen on instead (0 picks one): for development. */
  port?: number;
  /** Requests and WebSocket traffic count as activity for the idle policy. */
  activity: Activity;
  logger: Logger;
}

/** A listening preview proxy. */
export interface PreviewProxy {
  /** Where it listens: `unix:/abs/path` or `http://127.0.0.1:<port>` (an orchestrator's `previewEndpoint`). */
  endpoint: string;
  /** Stops listening and cuts every proxied connection. */
  close(): Promise<void>;
}

/** The port named by the request, or an error message for a 400. */
function targetPort(req: http.IncomingMessage): number | string {
  const raw = req.headers[previewPortHeader];
  if (typeof raw !== "string" || !/^[0-9]{1,5}$/.test(raw.trim())) {
    return `${previewPortHeader} must name the app's port (1 to 65535)`;
  }
  const port = Number(raw.trim());
  return port >= 1 && port <= 65_535 ? port : `${previewPortHeader} must be 1 to 65535, not ${raw}`;
}

/** The request's headers for the app: core's routing header removed. */
function stripRouting(req: http.IncomingMessage): void {
  delete req.headers[previewPortHeader];
}

/** Whether a connection error means nothing listens on the port. */
function nothingListens(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === "ECONNREFUSED" || code === "EADDRNOTAVAIL" || code === "ENOTFOUND";
}

/**
 * Starts the preview proxy. The proxying itself is http-proxy-3 (a maintained rewrite of
 * http-proxy: streaming bodies, WebSocket upgrades, hop-by-hop headers handled); this module
 * only picks the target and answers what cannot be proxied.
 */
export async function startPreviewProxy(options: PreviewProxyOptions): Promise<PreviewProxy> {
  const { activity } = options;
  const logger = options.logger.child({ component: "preview-proxy" });
  // No proxy timeout: server-sent events and long polls stay open as long as the app keeps them.
  const proxy = createProxyServer({ xfwd: false, ws: true, prependPath: false });
  const sockets = new Set<Duplex>();

  proxy.on("proxyRes", (proxyRes, _req, res) => {
    // Headers go out at once, not with the first chunk: an event stream may stay silent a while.
    setImmediate(() => {
      if (!res.headersSent && !res.writableEnded && !res.destroyed) res.flushHeaders();
    });
    proxyRes.on("data", () => activity.touch());
  });
  proxy.on("open", (proxySocket) => {
    proxySocket.on("data", () => activity.touch());
  });

  const server = http.createServer((req, res) => {
    activity.touch();
    const port = targetPort(req);
    if (typeof port === "string") {
      sendHtmlPage(res, 400, "Bad preview request", port);
      return;
    }
    stripRouting(req);
    proxy.web(req, res, { target: `http://127.0.0.1:${port}` }, (error) => {
      if (nothingListens(error)) {
        sendHtmlPage(res, 502, "Nothing listens here", `nothing listens on port ${port} in this repl`);
        return;
      }
      logger.debug({ err: error, port }, "proxying a preview request failed");
      sendHtmlPage(
        res,
        502,
        "The app did not answer",
        `the app on port ${port} in this repl did not answer: ${error.message}`,
      );
    });
  });
  server.on("upgrade", (req, socket, head) => {
    activity.touch();
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    // Counted once the proxy pipes the socket (listening earlier would start the flow before anyone reads it).
    socket.once("pipe", () => socket.on("data", () => activity.touch()));
    const port = targetPort(req);
    if (typeof port === "string") {
      refuseUpgrade(socket, 400, port);
      return;
    }
    stripRouting(req);
    proxy.ws(req, socket, head, { target: `http://127.0.0.1:${port}` }, (error) => {
      logger.debug({ err: error, port }, "proxying a preview WebSocket failed");
      refuseUpgrade(socket, 502, `nothing listens on port ${port} in this repl`);
    });
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  let endpoint: string;
  if (options.socketPath) {
    // Only core reaches it: the sandbox's uid owns the socket, core is root.
    await listenOnSocket(server, options.socketPath, 0o600);
    endpoint = `unix:${options.socketPath}`;
  } else {
    await listenAt(server, { port: options.port ?? 0, host: "127.0.0.1" });
    endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  }
  logger.info({ endpoint }, "preview proxy listening");

  return {
    endpoint,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      proxy.close();
      await closed;
      if (options.socketPath) await unlink(options.socketPath).catch(() => {});
    },
  };
}
