import { BlockList, isIPv4, isIPv6 } from "node:net";

/** What kind of destination an IP address is; only `public` is reachable without being listed literally. */
export type AddressClass =
  | "public"
  | "loopback"
  | "link-local"
  | "private"
  | "unique-local"
  | "multicast"
  | "unspecified"
  | "reserved";

/** Ranges that are not the public internet, by class. Node's BlockList also matches IPv4-mapped IPv6 forms. */
const ranges: ReadonlyArray<[AddressClass, string, number, "ipv4" | "ipv6"]> = [
  ["unspecified", "0.0.0.0", 8, "ipv4"],
  ["loopback", "127.0.0.0", 8, "ipv4"],
  // Includes the cloud metadata service, 169.254.169.254.
  ["link-local", "169.254.0.0", 16, "ipv4"],
  ["private", "10.0.0.0", 8, "ipv4"],
  ["private", "172.16.0.0", 12, "ipv4"],
  ["private", "192.168.0.0", 16, "ipv4"],
  // Carrier-grade NAT: not ours to reach either.
  ["private", "100.64.0.0", 10, "ipv4"],
  ["reserved", "192.0.0.0", 24, "ipv4"],
  ["reserved", "192.0.2.0", 24, "ipv4"],
  ["reserved", "198.18.0.0", 15, "ipv4"],
  ["reserved", "198.51.100.0", 24, "ipv4"],
  ["reserved", "203.0.113.0", 24, "ipv4"],
  ["multicast", "224.0.0.0", 4, "ipv4"],
  ["reserved", "240.0.0.0", 4, "ipv4"],
  ["unspecified", "::", 128, "ipv6"],
  ["loopback", "::1", 128, "ipv6"],
  ["link-local", "fe80::", 10, "ipv6"],
  // Includes AWS's IPv6 metadata address, fd00:ec2::254.
  ["unique-local", "fc00::", 7, "ipv6"],
  ["private", "fec0::", 10, "ipv6"],
  ["multicast", "ff00::", 8, "ipv6"],
  ["reserved", "2001:db8::", 32, "ipv6"],
  ["reserved", "100::", 64, "ipv6"],
  // IPv4-compatible (deprecated), Teredo and local-use NAT64 hide where they lead: refused outright.
  ["reserved", "::", 96, "ipv6"],
  ["reserved", "2001::", 32, "ipv6"],
  ["reserved", "64:ff9b:1::", 48, "ipv6"],
];

const byClass = new Map<AddressClass, BlockList>();
for (const [kind, network, prefix, family] of ranges) {
  const list = byClass.get(kind) ?? new BlockList();
  list.addSubnet(network, prefix, family);
  byClass.set(kind, list);
}

/** The 16 bytes of an IPv6 address in text form. */
function ipv6Bytes(address: string): Uint8Array {
  let text = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted?.[1]) {
    const [a = 0, b = 0, c = 0, d = 0] = dotted[1].split(".").map(Number);
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = [...headGroups, ...Array(8 - headGroups.length - tailGroups.length).fill("0"), ...tailGroups];
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    const value = Number.parseInt(group, 16);
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  });
  return bytes;
}

/**
 * The IPv4 address a translated IPv6 address leads to (NAT64 `64:ff9b::/96`, 6to4 `2002::/16`),
 * so that `64:ff9b::7f00:1` is judged as 127.0.0.1 while DNS64 addresses of public hosts still work.
 */
function embeddedIpv4(address: string): string | undefined {
  const b = ipv6Bytes(address);
  const nat64 =
    b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && b.subarray(4, 12).every((x) => x === 0);
  if (nat64) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  if (b[0] === 0x20 && b[1] === 0x02) return `${b[2]}.${b[3]}.${b[4]}.${b[5]}`;
  return undefined;
}

/** Classifies an IP address; anything that is not a valid address is `reserved`. */
export function classifyAddress(address: string): AddressClass {
  const family = isIPv4(address) ? "ipv4" : isIPv6(address) ? "ipv6" : undefined;
  if (family === undefined) return "reserved";
  for (const [kind, list] of byClass) {
    if (list.check(address, family)) return kind;
  }
  if (family === "ipv6") {
    const inner = embeddedIpv4(address);
    if (inner !== undefined) return classifyAddress(inner);
  }
  return "public";
}
