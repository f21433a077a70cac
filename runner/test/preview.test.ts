import { mkdtemp, rm } from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@devex/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket, WebSocketServer } from "ws";
import { Activity } from "../src/activity.js";
import { type PreviewProxy, previewPortHeader, startPreviewProxy } from "../src/preview/preview-proxy.js";

const logger = createLogger({ service: "runner", level: process.env.DEVEX_TEST_LOG_LEVEL ?? "silent" });

/** An app as a repl runs one: plain pages, an event stream, an upload echo and a WebSocket echo. */
async function startApp(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.url === "/events") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.flushHeaders();
      let n = 0;
      const timer = setInterval(() => {
        res.write(`data: tick ${n++}\n\n`);
        if (n === 3) {
          clearInterval(timer);
          res.end();
        }
      }, 50);
      return;
    }
    if (req.method === "POST") {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      req.pipe(res);
      return;
    }
    res.writeHead(200, { "content-type": "text/plain", "x-seen-port-header": String(req.headers[previewPortHeader]) });
    res.end(`hello from ${req.url}`);
  });
  const wss = new WebSocketServer({ server });
  wss.on("connection", (socket) => socket.on("message", (data, binary) => socket.send(data, { binary })));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        for (const client of wss.clients) client.terminate();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(
  proxy: PreviewProxy,
  path: string,
  headers: Record<string, string>,
  body?: string,
  onChunk?: (chunk: string, atMs: number) => void,
): Promise<Answer> {
  const socketPath = proxy.endpoint.startsWith("unix:") ? proxy.endpoint.slice(5) : undefined;
  const port = socketPath ? undefined : Number(new URL(proxy.endpoint).port);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { ...(socketPath ? { socketPath } : { host: "127.0.0.1", port }), path, method: body ? "POST" : "GET", headers },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
          onChunk?.(chunk, performance.now());
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

describe("the runner's preview proxy", () => {
  let dir: string;
  let app: Awaited<ReturnType<typeof startApp>>;
  let proxy: PreviewProxy;
  let tcpProxy: PreviewProxy;
  const activity = new Activity();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "devex-preview-"));
    app = await startApp();
    proxy = await startPreviewProxy({ socketPath: join(dir, "preview.sock"), activity, logger });
    tcpProxy = await startPreviewProxy({ port: 0, activity, logger });
  });
  afterAll(async () => {
    await proxy?.close();
    await tcpProxy?.close();
    await app?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("listens on a Unix socket or a loopback port", () => {
    expect(proxy.endpoint).toBe(`unix:${join(dir, "preview.sock")}`);
    expect(tcpProxy.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:[0-9]+$/);
  });

  it("forwards to the port named by core, without core's routing header, and counts as activity", async () => {
    const before = activity.lastActivityAt.getTime();
    await new Promise((resolve) => setTimeout(resolve, 5));
    for (const target of [proxy, tcpProxy]) {
      const answer = await request(target, "/some/page?q=1", { [previewPortHeader]: String(app.port) });
      expect(answer.status).toBe(200);
      expect(answer.body).toBe("hello from /some/page?q=1");
      expect(answer.headers["x-seen-port-header"]).toBe("undefined");
    }
    expect(activity.lastActivityAt.getTime()).toBeGreaterThan(before);
  });

  it("streams request bodies to the app and back", async () => {
    const big = "x".repeat(3 * 1024 * 1024);
    const answer = await request(proxy, "/upload", { [previewPortHeader]: String(app.port) }, big);
    expect(answer.status).toBe(200);
    expect(answer.body.length).toBe(big.length);
  });

  it("passes server-sent events on as they come", async () => {
    const arrivals: number[] = [];
    const answer = await request(proxy, "/events", { [previewPortHeader]: String(app.port) }, undefined, (_c, at) =>
      arrivals.push(at),
    );
    expect(answer.headers["content-type"]).toBe("text/event-stream");
    expect(answer.body).toBe("data: tick 0\n\ndata: tick 1\n\ndata: tick 2\n\n");
    // Three events 50 ms apart arrive as three chunks spread over time, not at once at the end.
    expect(arrivals.length).toBe(3);
    expect((arrivals[2] as number) - (arrivals[0] as number)).toBeGreaterThan(60);
  });

  it("pipes WebSocket upgrades both ways", async () => {
    const socketPath = join(dir, "preview.sock");
    const ws = new WebSocket(`ws+unix://${socketPath}:/socket`, {
      headers: { [previewPortHeader]: String(app.port) },
    });
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    const echoed = new Promise<string>((resolve) => ws.once("message", (data) => resolve(String(data))));
    ws.send("ping over the preview");
    expect(await echoed).toBe("ping over the preview");
    ws.close();
  });

  it("answers 400 without a valid port header", async () => {
    const invalid: Record<string, string>[] = [{}, { [previewPortHeader]: "abc" }, { [previewPortHeader]: "70000" }];
    for (const headers of invalid) {
      const answer = await request(proxy, "/", headers);
      expect(answer.status).toBe(400);
      expect(answer.body).toContain(previewPortHeader);
    }
  });

  it("answers 502 with a page when nothing listens on the port", async () => {
    const idle = http.createServer();
    await new Promise<void>((resolve) => idle.listen(0, "127.0.0.1", resolve));
    const freePort = (idle.address() as AddressInfo).port;
    await new Promise((resolve) => idle.close(resolve));
    const answer = await request(proxy, "/", { [previewPortHeader]: String(freePort) });
    expect(answer.status).toBe(502);
    expect(answer.headers["content-type"]).toContain("text/html");
    expect(answer.body).toContain(`nothing listens on port ${freePort} in this repl`);
  });
});
