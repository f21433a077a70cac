import { spawnSync } from "node:child_process";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger, type Server, startServer } from "../src/index.js";

let dir: string;
const servers: Server[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "devex-kit-socket-test-"));
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close(100)));
  await rm(dir, { recursive: true, force: true });
});

function start(path: string): Promise<Server> {
  return startServer({
    name: "test",
    logger: createLogger({ service: "test", level: "silent" }),
    path,
    routes: (router) =>
      router.service(FilesystemService, {
        stat(req) {
          throw new ConnectError(`nothing at ${req.path}`, Code.NotFound);
        },
      }),
  }).then((server) => {
    servers.push(server);
    return server;
  });
}

/** gRPC over h2c through the socket: the HTTP/2 session's connection is the socket. */
const grpcOver = (path: string) =>
  createGrpcTransport({ baseUrl: "http://localhost", nodeOptions: { createConnection: () => net.connect(path) } });

describe("startServer on a Unix socket", () => {
  it("serves gRPC on h2c and Connect on HTTP/1.1 there, to its owner only", async () => {
    const path = join(dir, "runner.sock");
    const server = await start(path);
    expect(server).toMatchObject({ socket: path, url: `unix:${path}`, port: 0 });
    expect((await stat(path)).mode & 0o777).toBe(0o600);

    const health = await createClient(Health, grpcOver(path)).check({ service: "" });
    expect(health.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const refused = await createClient(FilesystemService, grpcOver(path))
      .stat({ path: "x" })
      .catch((e: unknown) => ConnectError.from(e));
    expect(refused).toMatchObject({ code: Code.NotFound, rawMessage: "nothing at x" });

    const connect = createConnectTransport({
      baseUrl: "http://localhost",
      httpVersion: "1.1",
      nodeOptions: { socketPath: path },
    });
    const overH1 = await createClient(FilesystemService, connect)
      .stat({ path: "y" })
      .catch((e: unknown) => ConnectError.from(e));
    expect(overH1).toMatchObject({ code: Code.NotFound, rawMessage: "nothing at y" });

    // A plain HTTP/1.1 request, as curl --unix-socket sends it.
    const metrics = await new Promise<number | undefined>((resolve, reject) => {
      http.get({ socketPath: path, path: "/metrics" }, (res) => resolve(res.resume().statusCode)).on("error", reject);
    });
    expect(metrics).toBe(200);

    // And a raw h2c session over the socket.
    const session = http2.connect("http://localhost", { createConnection: () => net.connect(path) });
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const req = session.request({ ":path": "/metrics" });
      req.on("response", (headers) => resolve(headers[":status"] as number)).on("error", reject);
      req.resume();
      req.end();
    });
    session.close();
    expect(status).toBe(200);
  });

  it("replaces a stale socket and refuses to remove anything else", async () => {
    const path = join(dir, "stale.sock");
    // A server that exits without closing (as a crash does) leaves its socket file behind.
    const crashed = spawnSync(process.execPath, [
      "-e",
      'require("node:net").createServer().listen(process.argv[1], () => process.exit(0))',
      path,
    ]);
    expect(crashed.status).toBe(0);
    expect((await stat(path)).isSocket()).toBe(true);
    const server = await start(path);
    const health = await createClient(Health, grpcOver(path)).check({ service: "" });
    expect(health.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    await server.close(100);

    const file = join(dir, "not-a-socket");
    await writeFile(file, "keep me");
    await expect(start(file)).rejects.toThrow(/EADDRINUSE/);
    expect((await stat(file)).isFile()).toBe(true);
  });
});
