import { describe, expect, it } from "vitest";
import { classifyAddress } from "../src/egress/addresses.js";
import { Allowlist, normalizeHost } from "../src/egress/allowlist.js";

describe("egress allowlist", () => {
  const list = Allowlist.parse([
    "registry.npmjs.org",
    "*.pythonhosted.org:443",
    "Example.COM.",
    "10.0.0.5:8080",
    "[fd00::5]",
    "",
  ]);

  it("matches exact names on any port, normalised", () => {
    expect(list.allowsHost("registry.npmjs.org", 443)).toBe(true);
    expect(list.allowsHost("registry.npmjs.org", 80)).toBe(true);
    expect(list.allowsHost("example.com", 443)).toBe(true);
    expect(list.allowsHost("www.registry.npmjs.org", 443)).toBe(false);
    expect(list.allowsHost("registry.npmjs.org.evil.test", 443)).toBe(false);
  });

  it("matches wildcard subdomains (not the apex) on the listed port", () => {
    expect(list.allowsHost("files.pythonhosted.org", 443)).toBe(true);
    expect(list.allowsHost("a.b.pythonhosted.org", 443)).toBe(true);
    expect(list.allowsHost("pythonhosted.org", 443)).toBe(false);
    expect(list.allowsHost("evilpythonhosted.org", 443)).toBe(false);
    expect(list.allowsHost("files.pythonhosted.org", 80)).toBe(false);
  });

  it("matches IP literals only against literal entries", () => {
    expect(list.allowsHost("10.0.0.5", 8080)).toBe(true);
    expect(list.allowsHost("10.0.0.5", 80)).toBe(false);
    expect(list.allowsHost("fd00::5", 1)).toBe(true);
    expect(list.allowsAddress("10.0.0.5", 8080)).toBe(true);
    // A name entry never allows an address, even one it might resolve to.
    expect(Allowlist.parse(["localhost"]).allowsAddress("127.0.0.1", 80)).toBe(false);
    expect(Allowlist.parse(["localhost"]).allowsHost("127.0.0.1", 80)).toBe(false);
  });

  it("normalises the spellings of one address alike", () => {
    expect(normalizeHost("127.1")).toBe("127.0.0.1");
    expect(normalizeHost("2130706433")).toBe("127.0.0.1");
    expect(normalizeHost("[::FFFF:127.0.0.1]")).toBe("::ffff:7f00:1");
    expect(normalizeHost("bücher.example")).toBe("xn--bcher-kva.example");
    expect(normalizeHost("a b")).toBeUndefined();
    expect(normalizeHost("user@host")).toBeUndefined();
    expect(Allowlist.parse(["127.1:80"]).allowsHost("127.0.0.1", 80)).toBe(true);
  });

  it("refuses bad entries with a message that quotes them", () => {
    for (const [entry, why] of [
      ["*", /every host/],
      ["https://registry.npmjs.org", /is a URL/],
      ["registry.npmjs.org:0", /port/],
      ["registry.npmjs.org:http", /port/],
      ["*.10.0.0.1", /wildcard before an IP/],
      ["a/b", /not a host name/],
      ["*.*.example.org", /not a host name/],
    ] as const) {
      expect(() => Allowlist.parse([entry]), entry).toThrow(why);
      expect(() => Allowlist.parse([entry]), entry).toThrow(JSON.stringify(entry));
    }
  });
});

describe("address classes", () => {
  it.each([
    ["8.8.8.8", "public"],
    ["2606:4700::1111", "public"],
    ["127.0.0.1", "loopback"],
    ["127.9.9.9", "loopback"],
    ["::1", "loopback"],
    ["169.254.169.254", "link-local"],
    ["fe80::1", "link-local"],
    ["10.1.2.3", "private"],
    ["172.20.0.1", "private"],
    ["192.168.1.1", "private"],
    ["100.64.0.1", "private"],
    ["fd00:ec2::254", "unique-local"],
    ["0.0.0.0", "unspecified"],
    ["::", "unspecified"],
    ["224.0.0.1", "multicast"],
    ["::ffff:127.0.0.1", "loopback"],
    ["::ffff:7f00:1", "loopback"],
    ["::ffff:8.8.8.8", "public"],
    ["64:ff9b::a9fe:a9fe", "link-local"],
    ["64:ff9b::808:808", "public"],
    ["2002:a00:1::", "private"],
    ["not an address", "reserved"],
  ])("%s is %s", (address, kind) => {
    expect(classifyAddress(address)).toBe(kind);
  });
});
