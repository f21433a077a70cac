import { isIPv6 } from "node:net";

/** Options for {@link clientAddressOf}. */
export interface ClientAddressOptions {
  /**
   * Trust `X-Forwarded-For` from this many proxies in front of core (`true` means one): the
   * client is the entry that many places from the right. Off (default), the header is ignored,
   * since anyone can send it.
   */
  trustProxy?: boolean | number;
}

/**
 * The client address of a request: from `X-Forwarded-For` when proxies are trusted, else the
 * connection's peer (`socketAddress`, which the kit passes as `clientAddressKey`); `unknown`
 * when neither is known. No other header is ever believed.
 */
export function clientAddressOf(
  header: (name: string) => string | null | undefined,
  options: ClientAddressOptions,
  socketAddress?: string,
): string {
  const hops = options.trustProxy === true ? 1 : options.trustProxy || 0;
  if (hops > 0) {
    const chain = (header("x-forwarded-for") ?? "")
      .split(",")
      .map((entry) => entry.trim())
      .filter(Boolean);
    const client = chain[Math.max(0, chain.length - hops)];
    if (client) return normalize(client);
  }
  const peer = socketAddress?.trim();
  return peer ? normalize(peer) : "unknown";
}

/** IPv4-mapped IPv6 addresses as plain IPv4. */
function normalize(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped?.[1] ?? address.toLowerCase();
}

/**
 * The rate-limit bucket of an address: an IPv6 address counts as its /64 network (one host
 * usually holds a whole /64 and could rotate through it), anything else as itself.
 */
export function addressBucket(address: string): string {
  if (!isIPv6(address)) return address;
  const [head = "", tail] = address.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(":")}::/64`;
}
