import { isIP } from "node:net";

/** One parsed entry of a repl's egress allowlist. Without a port, an entry allows every port. */
export type AllowRule =
  /** `registry.npmjs.org`: that name only. */
  | { kind: "name"; name: string; port?: number }
  /** `*.pythonhosted.org`: every name below it (not the apex itself); `suffix` is `.pythonhosted.org`. */
  | { kind: "subdomains"; suffix: string; port?: number }
  /** `10.0.0.5`, `[fd00::5]:8080`: that address only, even when it is private or loopback. */
  | { kind: "address"; address: string; port?: number };

/**
 * Normalises a host as a URL parser would (lower case, punycode, canonical IP text, no brackets,
 * no trailing dot), or returns undefined when it is not a plain host name or IP address. Both the
 * allowlist and the proxy's requests go through this, so `127.1` and `127.0.0.1` are one host.
 */
export function normalizeHost(host: string): string | undefined {
  if (host === "" || /[\s/\\?#@%]/.test(host)) return undefined;
  const bracketed = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  let hostname: string;
  try {
    hostname = new URL(`http://${bracketed}/`).hostname;
  } catch {
    return undefined;
  }
  if (hostname.startsWith("[")) return hostname.slice(1, -1);
  const name = hostname.endsWith(".") ? hostname.slice(0, -1) : hostname;
  if (isIP(name) !== 0) return name;
  return /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(name) ? name : undefined;
}

/** Parses a port written in an entry or a request ("443"), or returns undefined. */
export function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address into its parts. */
function splitHostPort(entry: string): { host: string; port?: string } {
  if (entry.startsWith("[")) {
    const close = entry.indexOf("]");
    if (close < 0) return { host: entry };
    const rest = entry.slice(close + 1);
    return rest.startsWith(":") ? { host: entry.slice(0, close + 1), port: rest.slice(1) } : { host: entry };
  }
  const colons = entry.split(":").length - 1;
  if (colons !== 1) return { host: entry };
  const at = entry.indexOf(":");
  return { host: entry.slice(0, at), port: entry.slice(at + 1) };
}

/** Parses one entry, or throws an Error that quotes it and says what is wrong. */
export function parseAllowRule(entry: string): AllowRule {
  const text = entry.trim();
  const bad = (why: string) => new Error(`egress allowlist entry ${JSON.stringify(entry)} ${why}`);
  if (text === "*" || text === "*.*") throw bad("would allow every host: list the hosts the repl needs");
  if (text.includes("://")) throw bad("is a URL: write only the host (and `:port`), as in `registry.npmjs.org`");
  const wildcard = text.startsWith("*.");
  const { host, port: portText } = splitHostPort(wildcard ? text.slice(2) : text);
  const port = portText === undefined ? undefined : parsePort(portText);
  if (portText !== undefined && port === undefined) throw bad("has a port that is not a number from 1 to 65535");
  const normalized = normalizeHost(host);
  if (normalized === undefined || normalized.includes("*")) {
    throw bad("is not a host name, `*.domain` or IP address (optionally with `:port`)");
  }
  const withPort = port === undefined ? {} : { port };
  if (isIP(normalized) !== 0) {
    if (wildcard) throw bad("puts a wildcard before an IP address");
    return { kind: "address", address: normalized, ...withPort };
  }
  return wildcard
    ? { kind: "subdomains", suffix: `.${normalized}`, ...withPort }
    : { kind: "name", name: normalized, ...withPort };
}

/** A repl's egress allowlist: which host names and which literal addresses its programs may reach. */
export class Allowlist {
  /** Parses every entry; throws on the first bad one, so a bad setting fails at start-up. */
  static parse(entries: readonly string[]): Allowlist {
    return new Allowlist(entries.filter((entry) => entry.trim() !== "").map(parseAllowRule));
  }

  constructor(readonly rules: readonly AllowRule[]) {}

  /** Whether a normalised host (name or IP literal, as a request names it) may be reached on `port`. */
  allowsHost(host: string, port: number): boolean {
    if (isIP(host) !== 0) return this.allowsAddress(host, port);
    return this.rules.some((rule) => {
      if (rule.port !== undefined && rule.port !== port) return false;
      if (rule.kind === "name") return rule.name === host;
      if (rule.kind === "subdomains") return host.endsWith(rule.suffix);
      return false;
    });
  }

  /** Whether an IP address is listed literally (for `port`). Names on the list never match here. */
  allowsAddress(address: string, port: number): boolean {
    return this.rules.some(
      (rule) => rule.kind === "address" && rule.address === address && (rule.port === undefined || rule.port === port),
    );
  }
}
