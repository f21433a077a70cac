import { execFile } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, stat } from "node:fs/promises";
import * as http from "node:http";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createLogger } from "@devex/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// The sandbox half of the same path: the test runs both halves end to end, as a repl's programs use them.
import { type EgressForwarder, startEgressForwarder } from "../../../runner/src/egress.js";
import { createEgressProxy, type EgressProxy, type EgressTarget } from "../src/egress/index.js";

const logger = createLogger({ service: "core", level: process.env.DEVEX_TEST_LOG_LEVEL ?? "silent" });

/** A public address the test's lookup gives `public.test`; the test's connect sends it to loopback. */
const publicAddress = "93.184.215.14";

let dir: string;
let web: http.Server;
let webPort: number;
let echo: net.Server;
let echoPort: number;
let closedPort: number;
let proxy: EgressProxy;
let forwarder: EgressForwarder;
const lookups: string[] = [];
const dials: EgressTarget[] = [];

async function listen<S extends net.Server>(server: S): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as net.AddressInfo).port;
}

/** Reads from a socket until `done` says the text so far is complete, or the socket ends. */
function readUntil(socket: net.Socket, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve) => {
    let received = "";
    const finish = () => {
      socket.off("data", onData);
      socket.off("close", finish);
      socket.pause();
      resolve(received);
    };
    const onData = (chunk: Buffer) => {
      received += String(chunk);
      if (done(received)) finish();
    };
    socket.on("data", onData);
    socket.once("close", finish);
    socket.on("error", () => {});
    socket.resume();
  });
}

/** Sends `CONNECT authority` through the forwarder; returns the response head and the open socket. */
async function connectThrough(port: number, authority: string): Promise<{ head: string; socket: net.Socket }> {
  const socket = net.connect(port, "127.0.0.1");
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  // A tunnel stays open after its head; a refusal is read to its end (its body is the message).
  const response = await readUntil(socket, (text) => text.startsWith("HTTP/1.1 200") && text.includes("\r\n\r\n"));
  const end = response.indexOf("\r\n\r\n");
  return { head: response.startsWith("HTTP/1.1 200") ? response.slice(0, end) : response, socket };
}

/** A plain-HTTP request through the forwarder, in absolute form as programs send it to a proxy. */
async function getThrough(
  url: string,
  init: { method?: string; body?: string; port?: number } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const req = http.request({
    host: "127.0.0.1",
    port: init.port ?? forwarder.port,
    method: init.method ?? "GET",
    path: url,
    headers: { host: "ignored.invalid" },
    agent: false,
  });
  req.end(init.body);
  const [res] = (await once(req, "response")) as [http.IncomingMessage];
  let body = "";
  for await (const chunk of res) body += String(chunk);
  return { status: res.statusCode ?? 0, headers: res.headers, body };
}

async function echoThrough(socket: net.Socket, text: string): Promise<string> {
  socket.write(text);
  return readUntil(socket, (received) => received.length >= text.length);
}

async function until(predicate: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !predicate(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  if (!predicate()) throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "devex-egress-"));
  web = http.createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += String(chunk);
    res.setHeader("x-seen-host", req.headers.host ?? "");
    res.setHeader("x-seen-proxy-auth", req.headers["proxy-authorization"] ?? "none");
    res.end(`${req.method} ${req.url} ${body}`);
  });
  webPort = await listen(web);
  echo = net.createServer((socket) => socket.pipe(socket));
  echoPort = await listen(echo);
  const closed = net.createServer();
  closedPort = await listen(closed);
  closed.close();
  proxy = await createEgressProxy({
    socketPath: join(dir, "egress.sock"),
    allow: [
      `127.0.0.1:${webPort}`,
      `127.0.0.1:${echoPort}`,
      `127.0.0.1:${closedPort}`,
      "registry.test",
      "*.metadata.test",
      "public.test",
    ],
    logger,
    lookup: async (hostname) => {
      lookups.push(hostname);
      const table: Record<string, string> = {
        "registry.test": "127.0.0.1",
        "aws.metadata.test": "169.254.169.254",
        "public.test": publicAddress,
      };
      const address = table[hostname];
      if (address === undefined) throw Object.assign(new Error("not found"), { code: "ENOTFOUND" });
      return [{ address, family: 4 }];
    },
    connect: (target) => {
      dials.push(target);
      // Stand-in for the internet: the public address leads to this machine's test servers.
      const address = target.address === publicAddress ? "127.0.0.1" : target.address;
      return net.connect({ host: address, port: target.port, allowHalfOpen: true });
    },
  });
  forwarder = await startEgressForwarder({ listenPort: 0, host: "127.0.0.1", socketPath: proxy.socketPath });
});

afterAll(async () => {
  await forwarder?.close();
  await proxy?.close();
  web?.closeAllConnections();
  web?.close();
  echo?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("egress proxy through the runner's forwarder", () => {
  it("carries a plain HTTP request to a listed IP, with the URL's host and no proxy headers", async () => {
    const res = await getThrough(`http://127.0.0.1:${webPort}/hello?x=1`, { method: "POST", body: "payload" });
    expect(res.status).toBe(200);
    expect(res.body).toBe("POST /hello?x=1 payload");
    expect(res.headers["x-seen-host"]).toBe(`127.0.0.1:${webPort}`);
    expect(res.headers["x-seen-proxy-auth"]).toBe("none");
  });

  it("streams a large body both ways", async () => {
    const big = "x".repeat(4 * 1024 * 1024);
    const res = await getThrough(`http://127.0.0.1:${webPort}/upload`, { method: "PUT", body: big });
    expect(res.status).toBe(200);
    expect(res.body.length).toBe("PUT /upload ".length + big.length);
  });

  it("opens a CONNECT tunnel to a listed IP and pipes bytes both ways", async () => {
    const { head, socket } = await connectThrough(forwarder.port, `127.0.0.1:${echoPort}`);
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    expect(await echoThrough(socket, "client hello")).toBe("client hello");
    socket.destroy();
  });

  it("refuses a host that is not listed with 403 and one line naming it", async () => {
    const res = await getThrough("http://evil.test/steal");
    expect(res.status).toBe(403);
    expect(res.body).toBe("Devex egress proxy: evil.test (port 80) is not on this repl's egress allowlist\n");
    expect(res.headers["proxy-status"]).toBe("devex-egress; error=http_request_denied");
    const { head, socket } = await connectThrough(forwarder.port, "evil.test:443");
    socket.destroy();
    expect(head).toMatch(/^HTTP\/1\.1 403 Forbidden/);
    expect(head).toContain("evil.test (port 443) is not on this repl's egress allowlist");
    expect(lookups).not.toContain("evil.test");
  });

  it("refuses a listed IP on a port it is not listed for, and other spellings of loopback", async () => {
    expect((await getThrough("http://127.0.0.1:1/")).status).toBe(403);
    for (const authority of ["127.1:22", "[::1]:22", "[::ffff:127.0.0.1]:22", "2130706433:22", "localhost:22"]) {
      const { head, socket } = await connectThrough(forwarder.port, authority);
      socket.destroy();
      expect(head, authority).toMatch(/^HTTP\/1\.1 403/);
    }
  });

  it("refuses a listed name that resolves to loopback, resolving it once", async () => {
    const before = lookups.length;
    const { head, socket } = await connectThrough(forwarder.port, "registry.test:22");
    socket.destroy();
    expect(head).toMatch(/^HTTP\/1\.1 403/);
    expect(head).toContain("registry.test resolves to 127.0.0.1 (loopback)");
    expect(head).toContain("proxy-status: devex-egress; error=destination_ip_prohibited");
    expect(lookups.slice(before)).toEqual(["registry.test"]);
    expect(dials.some((target) => target.host === "registry.test")).toBe(false);
  });

  it("lets a listed name reach a private address that is also listed literally (IP and port)", async () => {
    const { head, socket } = await connectThrough(forwarder.port, `registry.test:${echoPort}`);
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    expect(await echoThrough(socket, "mirror")).toBe("mirror");
    socket.destroy();
  });

  it("refuses the cloud metadata address, literally or through a listed name", async () => {
    const literal = await getThrough("http://169.254.169.254/latest/meta-data/");
    expect(literal.status).toBe(403);
    expect(literal.body).toContain("169.254.169.254 (port 80) is not on this repl's egress allowlist");
    const named = await getThrough("http://aws.metadata.test/latest/meta-data/");
    expect(named.status).toBe(403);
    expect(named.body).toContain("aws.metadata.test resolves to 169.254.169.254 (link-local)");
  });

  it("connects a listed public name to the address it resolved, without a second lookup", async () => {
    const before = lookups.length;
    const res = await getThrough(`http://public.test:${webPort}/pkg`);
    expect(res.status).toBe(200);
    expect(res.body).toBe("GET /pkg ");
    expect(res.headers["x-seen-host"]).toBe(`public.test:${webPort}`);
    const { head, socket } = await connectThrough(forwarder.port, `public.test:${echoPort}`);
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    expect(await echoThrough(socket, "tls bytes")).toBe("tls bytes");
    socket.destroy();
    expect(lookups.slice(before)).toEqual(["public.test", "public.test"]);
    expect(dials.filter((target) => target.host === "public.test").map((target) => target.address)).toEqual([
      publicAddress,
      publicAddress,
    ]);
  });

  it("answers 502 when an allowed destination refuses the connection", async () => {
    const res = await getThrough(`http://127.0.0.1:${closedPort}/`);
    expect(res.status).toBe(502);
    expect(res.body).toContain("refused the connection (ECONNREFUSED)");
    const { head, socket } = await connectThrough(forwarder.port, `127.0.0.1:${closedPort}`);
    socket.destroy();
    expect(head).toMatch(/^HTTP\/1\.1 502/);
  });

  it("refuses requests that are not for a proxy, and oversized headers", async () => {
    const origin = await getThrough("/not-absolute");
    expect(origin.status).toBe(400);
    expect(origin.body).toContain("absolute-form http://");
    const socket = net.connect(forwarder.port, "127.0.0.1");
    socket.end(`GET http://127.0.0.1:${webPort}/ HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(32 * 1024)}\r\n\r\n`);
    let received = "";
    for await (const chunk of socket) received += String(chunk);
    expect(received).toMatch(/^HTTP\/1\.1 431/);
  });

  it("frees every connection slot once the clients are gone", async () => {
    await until(() => proxy.activeConnections() === 0, "every slot to be released");
  });

  it("leaves the socket to its owner only", async () => {
    expect((await stat(proxy.socketPath)).mode & 0o777).toBe(0o600);
  });
});

describe("egress proxy with curl", () => {
  const curl = async (...args: string[]) => {
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
    try {
      const { stdout } = await promisify(execFile)("curl", ["-sS", "--max-time", "10", ...args], { env });
      return { code: 0, stdout, stderr: "" };
    } catch (error) {
      const failed = error as { code?: number; stdout?: string; stderr?: string };
      return { code: failed.code ?? -1, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
    }
  };
  let hasCurl = false;
  beforeAll(async () => {
    hasCurl = (await curl("--version")).code === 0;
  });

  it("works as curl's proxy for plain HTTP and for CONNECT tunnels", async ({ skip }) => {
    if (!hasCurl) skip("curl is not installed");
    const proxyUrl = `http://127.0.0.1:${forwarder.port}`;
    expect(await curl("-x", proxyUrl, `http://127.0.0.1:${webPort}/via-curl`)).toMatchObject({
      code: 0,
      stdout: "GET /via-curl ",
    });
    expect(await curl("-p", "-x", proxyUrl, `http://127.0.0.1:${webPort}/tunnelled`)).toMatchObject({
      code: 0,
      stdout: "GET /tunnelled ",
    });
    const denied = await curl("-x", proxyUrl, "http://evil.test/");
    expect(denied.stdout).toContain("evil.test (port 80) is not on this repl's egress allowlist");
    const tunnelDenied = await curl("-x", proxyUrl, "https://evil.test/");
    expect(tunnelDenied.code).toBe(56);
    expect(tunnelDenied.stderr).toContain("403");
  });
});

describe("egress proxy limits", () => {
  it("refuses connections past the limit with 429, and takes new ones once some close", async () => {
    const limited = await createEgressProxy({
      socketPath: join(dir, "limited.sock"),
      allow: [`127.0.0.1:${echoPort}`],
      logger,
      maxConnections: 2,
    });
    const front = await startEgressForwarder({ listenPort: 0, socketPath: limited.socketPath });
    try {
      const first = await connectThrough(front.port, `127.0.0.1:${echoPort}`);
      const second = await connectThrough(front.port, `127.0.0.1:${echoPort}`);
      expect(first.head).toMatch(/^HTTP\/1\.1 200/);
      expect(second.head).toMatch(/^HTTP\/1\.1 200/);
      const third = await connectThrough(front.port, `127.0.0.1:${echoPort}`);
      third.socket.destroy();
      expect(third.head).toMatch(/^HTTP\/1\.1 429/);
      expect(third.head).toContain("already has 2 connections open through its egress proxy");
      expect(third.head).toContain("error=connection_limit_reached");
      expect(await echoThrough(first.socket, "still open")).toBe("still open");
      first.socket.destroy();
      await until(() => limited.activeConnections() === 1, "the closed tunnel to free its slot");
      const fourth = await connectThrough(front.port, `127.0.0.1:${echoPort}`);
      expect(fourth.head).toMatch(/^HTTP\/1\.1 200/);
      fourth.socket.destroy();
      second.socket.destroy();
    } finally {
      await front.close();
      await limited.close();
    }
  });

  it("closes a tunnel that stays idle", async () => {
    const idle = await createEgressProxy({
      socketPath: join(dir, "idle.sock"),
      allow: [`127.0.0.1:${echoPort}`],
      logger,
      idleTimeoutMs: 300,
    });
    const front = await startEgressForwarder({ listenPort: 0, socketPath: idle.socketPath });
    try {
      const { head, socket } = await connectThrough(front.port, `127.0.0.1:${echoPort}`);
      expect(head).toMatch(/^HTTP\/1\.1 200/);
      socket.resume();
      const started = Date.now();
      await once(socket, "close");
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      await until(() => idle.activeConnections() === 0, "the idle tunnel to free its slot");
    } finally {
      await front.close();
      await idle.close();
    }
  });

  it("hands the socket to the sandbox uid and removes it on close", async ({ skip }) => {
    if (process.getuid?.() !== 0) skip("chown needs root");
    const owned = await createEgressProxy({ socketPath: join(dir, "owned.sock"), allow: [], logger, uid: 65534 });
    const info = await stat(owned.socketPath);
    expect(info.uid).toBe(65534);
    expect(info.mode & 0o777).toBe(0o600);
    await owned.close();
    await expect(stat(owned.socketPath)).rejects.toMatchObject({ code: "ENOENT" });
  });
});
