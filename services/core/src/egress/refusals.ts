import { STATUS_CODES } from "node:http";
import type { AddressClass } from "./addresses.js";

/**
 * Why the egress proxy did not carry a request: the HTTP status, the RFC 9209 Proxy-Status error
 * type (for programs) and one line for people, which is also the response body.
 */
export interface Refusal {
  status: number;
  proxyStatus: string;
  message: string;
}

const prefix = "Devex egress proxy:";

/** The target is not a host and port the proxy can parse. */
export function badTarget(what: string): Refusal {
  return { status: 400, proxyStatus: "http_request_error", message: `${prefix} ${what}` };
}

/** The host (or IP literal) matches no entry of the allowlist. */
export function notListed(host: string, port: number): Refusal {
  return {
    status: 403,
    proxyStatus: "http_request_denied",
    message: `${prefix} ${host} (port ${port}) is not on this repl's egress allowlist`,
  };
}

/** A listed name resolved only to addresses that are not public and not listed literally. */
export function addressProhibited(host: string, address: string, kind: AddressClass): Refusal {
  return {
    status: 403,
    proxyStatus: "destination_ip_prohibited",
    message: `${prefix} ${host} resolves to ${address} (${kind}), which is not on this repl's egress allowlist; only a literal IP entry allows such an address`,
  };
}

/** The proxy already carries as many connections for this repl as it may. */
export function connectionLimit(limit: number): Refusal {
  return {
    status: 429,
    proxyStatus: "connection_limit_reached",
    message: `${prefix} this repl already has ${limit} connections open through its egress proxy, the most it may have at once`,
  };
}

/** From a lookup or connect error code to a status, Proxy-Status type and phrase. */
const byErrno: Record<string, [number, string, string]> = {
  ENOTFOUND: [502, "dns_error", "does not resolve"],
  EAI_AGAIN: [504, "dns_timeout", "could not be resolved in time"],
  ETIMEDOUT: [504, "connection_timeout", "did not accept the connection in time"],
  ECONNREFUSED: [502, "connection_refused", "refused the connection"],
  ECONNRESET: [502, "connection_terminated", "reset the connection"],
  EHOSTUNREACH: [502, "destination_ip_unroutable", "is unreachable"],
  ENETUNREACH: [502, "destination_ip_unroutable", "is unreachable"],
};

/** A lookup or connection to an allowed destination failed. */
export function upstreamFailed(host: string, port: number, error: unknown): Refusal {
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "";
  const [status, proxyStatus, phrase] = byErrno[code] ?? [502, "destination_unavailable", "could not be reached"];
  return { status, proxyStatus, message: `${prefix} ${host}:${port} ${phrase}${code ? ` (${code})` : ""}` };
}

/** A refusal as the headers and body of an HTTP response. */
export function refusalResponse(refusal: Refusal): { headers: Record<string, string>; body: string } {
  const body = `${refusal.message}\n`;
  return {
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "content-length": String(Buffer.byteLength(body)),
      "proxy-status": `devex-egress; error=${refusal.proxyStatus}`,
    },
    body,
  };
}

/** A refusal as raw HTTP/1.1 bytes, for sockets no longer owned by node:http (CONNECT, upgrades). */
export function refusalBytes(refusal: Refusal): string {
  const { headers, body } = refusalResponse(refusal);
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? ""}\r\n${lines.join("")}connection: close\r\n\r\n${body}`;
}
