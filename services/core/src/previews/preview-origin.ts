/**
 * The preview origin: core's own HTTP/1.1 server for repls' web apps, one host per repl and
 * port (see hosts.ts). A private port needs the owner's preview cookie, which a preview URL's
 * short-lived token is exchanged for on first use (then the browser is redirected to the same
 * URL without it); a public port needs nothing. Requests, server-sent events and WebSocket
 * upgrades then go to the runner's preview proxy (`RunnerInstance.previewEndpoint`, a Unix
 * socket or a loopback URL) with the app's port in `x-devex-preview-port`, and with every
 * Devex credential (the preview cookie, core's session, an API key) taken out.
 */

import * as http from "node:http";
import type { Duplex } from "node:stream";
import { endpointConnection, listenAt, refuseUpgrade, sendHtmlPage } from "@devex/kit";
import { createProxyServer, type ProxyTarget } from "http-proxy-3";
import type { Logger } from "pino";
import { loginCookieName, sessionCookieName } from "../identity/cookies.js";
import type { ReplStateName } from "../model.js";
import type { TokenKeys } from "../orchestrator/token-keys.js";
import type { ReplRepository } from "../repls/repository.js";
import type { RunnerEndpoints } from "../routing/endpoints.js";
import { type PreviewAddress, type PreviewHost, parsePreviewHost, previewTokenParam } from "./hosts.js";
import { PreviewCredentialError, signPreviewCredential, verifyPreviewCredential } from "./tokens.js";

/** The cookie a preview host keeps its credential in. */
export const previewCookieName = "devex_preview";
/** The header naming the app's port for the runner's preview proxy. */
export const previewPortHeader = "x-devex-preview-port";

/** Options for {@link startPreviewOrigin}. */
export interface PreviewOriginOptions {
  /** The TCP port; 0 picks a free one. */
  port: number;
  /** The address to listen on. Default `127.0.0.1`. */
  host?: string;
  /** How people reach previews (domain and scheme): hosts outside the domain are not served. */
  address: PreviewAddress;
  /** The repl records (owner, state, public ports, where the runner's preview proxy is). */
  repository: Pick<ReplRepository, "get">;
  /**
   * Running repls' records, kept between requests (see createRunnerEndpoints), so that a page's
   * every asset costs no store read; the repository is read only for a repl that is not running.
   */
  running: RunnerEndpoints["running"];
  /** Core's key pair: preview tokens and cookies are signed and checked with it. */
  tokenKeys: Pick<TokenKeys, "privateKey" | "publicKey">;
  /** How long a preview cookie lasts, in ms. Default 43200000 (12 hours). */
  cookieTtlMs?: number;
  /** How long shutdown lets requests finish before cutting them, in ms. Default 5000. */
  shutdownGraceMs?: number;
  logger: Logger;
}

/** A listening preview origin. */
export interface PreviewOrigin {
  /** The port it listens on. */
  port: number;
  /** `http://<host>:<port>`, the listening address (not a preview URL). */
  url: string;
  close(): Promise<void>;
}

/** What to do with a request, once the repl, the credential and the state were looked at. */
type Decision =
  | { kind: "page"; status: number; title: string; message: string }
  | { kind: "redirect"; location: string; cookie: string | undefined }
  | { kind: "forward"; endpoint: string; port: number };

const stateMessages: Partial<Record<ReplStateName, string>> = {
  created: "This repl has not been started yet. Start it, then reload this page.",
  starting: "This repl is starting. Reload this page in a moment.",
  stopping: "This repl is stopping. Start it again, then reload this page.",
  stopped: "This repl is stopped. Start it, then reload this page.",
};

/** Starts the preview origin. */
export async function startPreviewOrigin(options: PreviewOriginOptions): Promise<PreviewOrigin> {
  const logger = options.logger.child({ component: "preview-origin" });
  const cookieTtlMs = options.cookieTtlMs ?? 12 * 3_600_000;
  const secure = options.address.scheme === "https";
  // xfwd: apps learn the browser's scheme and address; the Host header stays the preview host's.
  const proxy = createProxyServer({ xfwd: true, ws: true, prependPath: false });
  const sockets = new Set<Duplex>();

  proxy.on("proxyRes", (_proxyRes, _req, res) => {
    // Headers go out at once, not with the first chunk: an event stream may stay silent a while.
    setImmediate(() => {
      if (!res.headersSent && !res.writableEnded && !res.destroyed) res.flushHeaders();
    });
  });

  /** `upgrade`: a WebSocket handshake, which cannot follow a redirect, so a valid link token opens it directly. */
  const decide = async (req: http.IncomingMessage, target: PreviewHost, upgrade: boolean): Promise<Decision> => {
    const page = (status: number, title: string, message: string): Decision => ({
      kind: "page",
      status,
      title,
      message,
    });
    const record = (await options.running(target.replId)) ?? (await options.repository.get(target.replId))?.record;
    if (!record || record.state === "deleting") {
      return page(404, "No such repl", `There is no repl ${target.replId}.`);
    }
    const url = new URL(req.url ?? "/", "http://preview.invalid");
    const linkToken = url.searchParams.get(previewTokenParam);
    const expected = { replId: target.replId, port: target.port };
    const isPublic = (record.publicPorts ?? []).includes(target.port);
    try {
      if (linkToken !== null) {
        const grant = await verifyPreviewCredential(options.tokenKeys.publicKey, "link", linkToken, expected).catch(
          (error: unknown) => {
            // A public port needs no token: a stale one from when it was private is only dropped.
            if (isPublic && error instanceof PreviewCredentialError) return undefined;
            throw error;
          },
        );
        if (!grant) {
          if (!upgrade) return { kind: "redirect", location: withoutToken(url), cookie: undefined };
        } else if (grant.userId !== record.ownerUserId) {
          return page(403, "Not yours", "This preview token was issued to someone who does not own this repl.");
        } else if (!upgrade) {
          const cookie = await signPreviewCredential(options.tokenKeys.privateKey, "cookie", grant, cookieTtlMs);
          const attributes = [
            `${previewCookieName}=${cookie.token}`,
            "Path=/",
            `Max-Age=${Math.floor(cookieTtlMs / 1000)}`,
            "HttpOnly",
            "SameSite=Lax",
            ...(secure ? ["Secure"] : []),
          ];
          return { kind: "redirect", location: withoutToken(url), cookie: attributes.join("; ") };
        }
      } else if (!isPublic) {
        const cookie = readCookie(req.headers.cookie, previewCookieName);
        if (cookie === undefined) {
          return page(
            401,
            "Sign-in needed",
            `Port ${target.port} of this repl is private. Open it through Devex (devex open, or the SDK's repl.previewUrl) to get a link that signs you in.`,
          );
        }
        const grant = await verifyPreviewCredential(options.tokenKeys.publicKey, "cookie", cookie, expected);
        if (grant.userId !== record.ownerUserId) {
          return page(403, "Not yours", "Only the owner of this repl may open this private port.");
        }
      }
    } catch (error) {
      if (!(error instanceof PreviewCredentialError)) throw error;
      return error.status === 401
        ? page(401, "Sign-in needed", `Your preview link cannot be used: ${error.message}. Ask Devex for a new one.`)
        : page(403, "Not allowed", `Your preview credential cannot open this page: ${error.message}.`);
    }
    if (record.state === "failed") {
      return page(
        503,
        "Repl failed",
        `This repl failed: ${record.failureReason || "no reason given"}. Start it again.`,
      );
    }
    if (record.state !== "running") {
      return page(503, `Repl ${record.state}`, stateMessages[record.state] ?? `This repl is ${record.state}.`);
    }
    if (!record.previewEndpoint) {
      return page(503, "No preview", "This repl's runner does not serve previews. Restart the repl.");
    }
    return { kind: "forward", endpoint: record.previewEndpoint, port: target.port };
  };

  /** Core's routing header set, and every Devex credential taken out of what the app receives. */
  const prepare = (req: http.IncomingMessage, port: number) => {
    req.headers[previewPortHeader] = String(port);
    const cookie = withoutCookies(req.headers.cookie, [previewCookieName, sessionCookieName, loginCookieName]);
    if (cookie) req.headers.cookie = cookie;
    else delete req.headers.cookie;
    if (/^\s*Bearer\s+dvx_/i.test(req.headers.authorization ?? "")) delete req.headers.authorization;
    // Meant for the proxy in front (core), never for the app.
    delete req.headers["proxy-authorization"];
    const url = new URL(req.url ?? "/", "http://preview.invalid");
    if (url.searchParams.has(previewTokenParam)) req.url = withoutToken(url);
  };

  const targetOf = (endpoint: string): ProxyTarget => {
    const connection = endpointConnection(endpoint);
    if (connection.socketPath) return { host: "localhost", port: 80, socketPath: connection.socketPath };
    return connection.origin;
  };

  const server = http.createServer((req, res) => {
    const target = parsePreviewHost(options.address, req.headers.host);
    if (!target) {
      sendHtmlPage(
        res,
        404,
        "No preview here",
        `This is Devex's preview origin; previews are at <port>-<repl>.${options.address.domain}.`,
      );
      return;
    }
    decide(req, target, false).then(
      (decision) => {
        if (decision.kind === "page") return sendHtmlPage(res, decision.status, decision.title, decision.message);
        if (decision.kind === "redirect") {
          res.writeHead(303, {
            location: decision.location,
            ...(decision.cookie ? { "set-cookie": decision.cookie } : {}),
            "cache-control": "no-store",
          });
          res.end();
          return;
        }
        prepare(req, decision.port);
        proxy.web(req, res, { target: targetOf(decision.endpoint) }, (error) => {
          logger.debug({ err: error, replId: target.replId }, "the runner's preview proxy did not answer");
          sendHtmlPage(res, 502, "Repl unreachable", "This repl's runner did not answer. Reload the page in a moment.");
        });
      },
      (error: unknown) => {
        logger.error({ err: error, replId: target.replId }, "a preview request failed");
        sendHtmlPage(res, 500, "Preview failed", "Devex could not serve this preview.");
      },
    );
  });

  server.on("upgrade", (req, socket, head) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    const target = parsePreviewHost(options.address, req.headers.host);
    if (!target) {
      refuseUpgrade(socket, 404, "no preview here");
      return;
    }
    decide(req, target, true).then(
      (decision) => {
        if (decision.kind !== "forward") {
          if (decision.kind === "page") return refuseUpgrade(socket, decision.status, decision.message);
          return refuseUpgrade(socket, 400, "cannot open this preview");
        }
        prepare(req, decision.port);
        proxy.ws(req, socket, head, { target: targetOf(decision.endpoint) }, (error) => {
          logger.debug({ err: error, replId: target.replId }, "a preview WebSocket failed");
          refuseUpgrade(socket, 502, "the repl's runner did not answer");
        });
      },
      (error: unknown) => {
        logger.error({ err: error, replId: target.replId }, "a preview WebSocket failed");
        refuseUpgrade(socket, 500, "Devex could not serve this preview");
      },
    );
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  const host = options.host ?? "127.0.0.1";
  await listenAt(server, { port: options.port, host });
  const port = (server.address() as { port: number }).port;
  logger.info({ port, host, domain: options.address.domain }, "preview origin listening");

  let closing: Promise<void> | undefined;
  return {
    port,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const grace = setTimeout(() => {
          for (const socket of sockets) socket.destroy();
        }, options.shutdownGraceMs ?? 5_000);
        await closed;
        clearTimeout(grace);
        proxy.close();
      })();
      return closing;
    },
  };
}

/** The path and query of `url` without the preview token: where the token exchange redirects to. */
function withoutToken(url: URL): string {
  const rest = new URL(url);
  rest.searchParams.delete(previewTokenParam);
  return `${rest.pathname}${rest.search}`;
}

/** The value of one cookie in a `Cookie` header. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const at = part.indexOf("=");
    if (at > 0 && part.slice(0, at).trim() === name) return part.slice(at + 1).trim();
  }
  return undefined;
}

/** A `Cookie` header without the named cookies; empty when none is left. */
export function withoutCookies(header: string | undefined, names: readonly string[]): string {
  return (header ?? "")
    .split(";")
    .map((part) => part.trim())
    .filter((part) => part && !names.includes(part.slice(0, Math.max(0, part.indexOf("="))).trim()))
    .join("; ");
}
