import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { egressProxyEnvironment, startEgressForwarder } from "../src/egress.js";

let dir: string;
let upstream: net.Server;
let socketPath: string;

/** Sends `request` over a fresh connection to `port`, half-closes, and reads until the server closes. */
async function exchange(port: number, request: string): Promise<string> {
  const socket = net.connect(port, "127.0.0.1");
  socket.end(request);
  let received = "";
  for await (const chunk of socket) received += String(chunk);
  return received;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "devex-forwarder-"));
  socketPath = join(dir, "egress.sock");
  // Stands in for core's proxy: answers once the client has sent everything (half-close), then closes.
  upstream = net.createServer({ allowHalfOpen: true }, (socket) => {
    let request = "";
    // A client cut by the forwarder's close leaves this answer nowhere to go.
    socket.on("error", () => {});
    socket.on("data", (chunk) => {
      request += String(chunk);
    });
    socket.on("end", () => socket.end(`got ${request.length} bytes: ${request.slice(0, 20)}`));
  });
  upstream.listen(socketPath);
  await once(upstream, "listening");
});

afterAll(async () => {
  upstream?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("egress forwarder", () => {
  it("pipes each loopback connection to the proxy's Unix socket, half-close included", async () => {
    const forwarder = await startEgressForwarder({ listenPort: 0, host: "127.0.0.1", socketPath });
    try {
      expect(forwarder.port).toBeGreaterThan(0);
      expect(await exchange(forwarder.port, "CONNECT a:443 HTTP/1.1\r\n\r\n")).toBe(
        "got 26 bytes: CONNECT a:443 HTTP/1",
      );
      const big = "y".repeat(2 * 1024 * 1024);
      const answers = await Promise.all([1, 2, 3].map(() => exchange(forwarder.port, big)));
      expect(answers).toEqual(Array(3).fill(`got ${big.length} bytes: ${"y".repeat(20)}`));
    } finally {
      await forwarder.close();
    }
  });

  it("answers 502 in HTTP when the proxy's socket is not there", async () => {
    const forwarder = await startEgressForwarder({ listenPort: 0, socketPath: join(dir, "missing.sock") });
    try {
      const response = await exchange(forwarder.port, "GET http://example.org/ HTTP/1.1\r\n\r\n");
      expect(response).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n/);
      expect(response).toContain("this repl's egress proxy is not reachable (ENOENT)");
    } finally {
      await forwarder.close();
    }
  });

  it("cuts open connections on close", async () => {
    const forwarder = await startEgressForwarder({ listenPort: 0, socketPath });
    const client = net.connect(forwarder.port, "127.0.0.1");
    await once(client, "connect");
    client.on("error", () => {});
    const closed = once(client, "close");
    await forwarder.close();
    await closed;
  });

  it("gives programs both spellings of the proxy variables, loopback exempt", () => {
    expect(egressProxyEnvironment(3128)).toEqual({
      HTTP_PROXY: "http://127.0.0.1:3128",
      HTTPS_PROXY: "http://127.0.0.1:3128",
      http_proxy: "http://127.0.0.1:3128",
      https_proxy: "http://127.0.0.1:3128",
      NO_PROXY: "localhost,127.0.0.1,::1",
      no_proxy: "localhost,127.0.0.1,::1",
      NODE_USE_ENV_PROXY: "1",
    });
  });
});
