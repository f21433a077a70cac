import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
} from "@devex/gen/grpc/reflection/v1/reflection_pb.js";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger, type Server, startServer } from "../src/index.js";
import { bufCurl } from "../src/testing/index.js";

const servers: Server[] = [];

/** A server with FilesystemService, whose Stat records that it ran. */
async function start(routes?: (router: ConnectRouter) => void): Promise<{ server: Server; statCalls: string[] }> {
  const statCalls: string[] = [];
  const server = await startServer({
    name: "test",
    logger: createLogger({ service: "test", level: "silent" }),
    port: 0,
    routes:
      routes ??
      ((router) =>
        router.service(FilesystemService, {
          stat(req) {
            statCalls.push(req.path);
            throw new ConnectError("nothing here", Code.NotFound);
          },
        })),
  });
  servers.push(server);
  return { server, statCalls };
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close(100)));
});

function transports(url: string): Record<string, Transport> {
  return {
    "gRPC over h2c": createGrpcTransport({ baseUrl: url }),
    "Connect over HTTP/1.1": createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
    "Connect over h2c": createConnectTransport({ baseUrl: url, httpVersion: "2" }),
    "gRPC-web over HTTP/1.1": createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1" }),
  };
}

describe("one port, every protocol", () => {
  it("answers health over gRPC, Connect and gRPC-web on HTTP/1.1 and h2c", async () => {
    const { server } = await start();
    for (const [name, transport] of Object.entries(transports(server.url))) {
      const res = await createClient(Health, transport).check({ service: "" });
      expect(res.status, name).toBe(HealthCheckResponse_ServingStatus.SERVING);
      const perService = await createClient(Health, transport).check({ service: "devex.runner.v1.FilesystemService" });
      expect(perService.status, name).toBe(HealthCheckResponse_ServingStatus.SERVING);
    }
  });

  it("answers a Connect unary call from plain HTTP/1.1 with JSON", async () => {
    const { server } = await start();
    const res = await fetch(`${server.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "SERVING" });
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("lists the status of the server and of every service", async () => {
    const { server } = await start();
    const res = await createClient(Health, createGrpcTransport({ baseUrl: server.url })).list({});
    expect(Object.keys(res.statuses).sort()).toEqual([
      "",
      "devex.runner.v1.FilesystemService",
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ]);
    expect(res.statuses[""]?.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it("says NOT_FOUND for a service health does not know", async () => {
    const { server } = await start();
    const client = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    await expect(client.check({ service: "nope.v1.Nope" })).rejects.toMatchObject({ code: Code.NotFound });
  });

  it("answers Unimplemented for a method without an implementation", async () => {
    const { server } = await start((router) => router.service(FilesystemService, {}));
    const client = createClient(FilesystemService, createGrpcTransport({ baseUrl: server.url }));
    await expect(client.stat({ path: "a.txt" })).rejects.toMatchObject({ code: Code.Unimplemented });
  });

  it("serves 404 for unknown plain paths and Prometheus metrics on /metrics", async () => {
    const { server } = await start();
    const client = createClient(FilesystemService, createGrpcTransport({ baseUrl: server.url }));
    await expect(client.stat({ path: "a.txt" })).rejects.toMatchObject({ code: Code.NotFound });
    await expect(client.stat({ path: "" })).rejects.toMatchObject({ code: Code.InvalidArgument });
    expect((await fetch(`${server.url}/nothing`)).status).toBe(404);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).toMatch(
      /rpc_server_calls_total\{method="devex.runner.v1.FilesystemService\/Stat",code="not_found",service="test"\} 1/,
    );
    expect(text).toMatch(
      /rpc_server_calls_total\{method="devex.runner.v1.FilesystemService\/Stat",code="invalid_argument",service="test"\} 1/,
    );
    expect(text).toContain("rpc_server_duration_seconds_bucket");
    expect(text).toContain("rpc_server_open_streams");
    expect(text).toContain("process_resident_memory_bytes");
  });
});

describe("validation", () => {
  it("refuses a request breaking a buf.validate rule before the handler runs, naming field and rule", async () => {
    const { server, statCalls } = await start();
    for (const [name, transport] of Object.entries(transports(server.url))) {
      const client = createClient(FilesystemService, transport);
      const error = await client.stat({ path: "" }).catch((e: unknown) => ConnectError.from(e));
      expect(error, name).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code, name).toBe(Code.InvalidArgument);
      expect((error as ConnectError).rawMessage, name).toMatch(/path: .*\[string\.min_len\]/);
    }
    expect(statCalls).toEqual([]);
  });

  it("names the field over plain HTTP/1.1 JSON too", async () => {
    const { server } = await start();
    const res = await fetch(`${server.url}/devex.runner.v1.FilesystemService/Stat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ path: "a\u0000b" }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; message: string };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toMatch(/^path: /);
  });
});

describe("reflection", () => {
  it("lists every service and method through buf curl over h2c (v1 and v1alpha)", async () => {
    const { server } = await start();
    for (const protocol of ["grpc-v1", "grpc-v1alpha"]) {
      const { stdout } = await bufCurl([
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--reflect-protocol",
        protocol,
        "--list-methods",
        server.url,
      ]);
      const methods = stdout.trim().split("\n");
      expect(methods).toContain("devex.runner.v1.FilesystemService/Stat");
      expect(methods).toContain("grpc.health.v1.Health/Watch");
      expect(methods).toContain("grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
      expect(methods.length).toBeGreaterThan(FilesystemService.methods.length);
    }
  });

  it("calls a method through buf curl with reflection and shows its error", async () => {
    const { server } = await start();
    const result = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      '{"path":""}',
      `${server.url}/devex.runner.v1.FilesystemService/Stat`,
    ]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("invalid_argument");
    expect(result.stderr).toContain("path");
  });

  it("serves files with their comments and dependencies, once per stream, and errors for unknown symbols", async () => {
    const { server } = await start();
    const client = createClient(ServerReflection, createGrpcTransport({ baseUrl: server.url }));
    const requests: ServerReflectionRequest[] = [
      create(ServerReflectionRequestSchema, {
        messageRequest: { case: "fileContainingSymbol", value: "devex.runner.v1.FilesystemService.Stat" },
      }),
      create(ServerReflectionRequestSchema, {
        messageRequest: { case: "fileContainingSymbol", value: "devex.runner.v1.FilesystemService" },
      }),
      create(ServerReflectionRequestSchema, {
        messageRequest: { case: "fileContainingSymbol", value: "no.such.Symbol" },
      }),
    ];
    async function* send() {
      yield* requests;
    }
    const answers = [];
    for await (const res of client.serverReflectionInfo(send())) answers.push(res);
    expect(answers).toHaveLength(3);
    const first = answers[0]?.messageResponse;
    expect(first?.case).toBe("fileDescriptorResponse");
    const files = first?.case === "fileDescriptorResponse" ? first.value.fileDescriptorProto : [];
    expect(files.length).toBeGreaterThan(1);
    const { fromBinary } = await import("@bufbuild/protobuf");
    const { FileDescriptorProtoSchema } = await import("@bufbuild/protobuf/wkt");
    const decoded = files.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
    const fsFile = decoded.find((f) => f.name === "devex/runner/v1/filesystem.proto");
    expect(fsFile?.sourceCodeInfo?.location.some((l) => l.leadingComments.trim().length > 0)).toBe(true);
    expect(decoded.map((f) => f.name)).toContain("buf/validate/validate.proto");
    const second = answers[1]?.messageResponse;
    expect(second?.case === "fileDescriptorResponse" && second.value.fileDescriptorProto.length).toBe(1);
    const third = answers[2]?.messageResponse;
    expect(third?.case).toBe("errorResponse");
    expect(third?.case === "errorResponse" && third.value.errorCode).toBe(Code.NotFound);
  });
});

describe("graceful shutdown", () => {
  it("tells health watchers NOT_SERVING, lets an open stream finish, then closes", async () => {
    const { server } = await start();
    const client = createClient(ServerReflection, createGrpcTransport({ baseUrl: server.url }));
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    async function* send() {
      yield create(ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
      await gate;
      yield create(ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
    }
    const answers: string[] = [];
    const stream = (async () => {
      for await (const res of client.serverReflectionInfo(send())) answers.push(res.messageResponse.case ?? "");
    })();
    await expect.poll(() => answers.length).toBe(1);
    const closed = server.close(10_000);
    let closedYet = false;
    void closed.then(() => {
      closedYet = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(closedYet).toBe(false);
    expect(server.openRequests()).toBe(1);
    release();
    await stream;
    await closed;
    expect(answers).toEqual(["listServicesResponse", "listServicesResponse"]);
    await expect(createClient(Health, createGrpcTransport({ baseUrl: server.url })).check({})).rejects.toMatchObject({
      code: Code.Unavailable,
    });
  });

  it("cancels streams still open when the grace period ends", async () => {
    const { server } = await start();
    const client = createClient(Health, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
    const statuses: HealthCheckResponse_ServingStatus[] = [];
    const watch = (async () => {
      for await (const res of client.watch({ service: "" })) statuses.push(res.status);
    })().catch((e: unknown) => ConnectError.from(e));
    await expect.poll(() => statuses.length).toBe(1);
    const started = performance.now();
    await server.close(300);
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(5_000);
    const ended = await watch;
    expect(statuses).toEqual([
      HealthCheckResponse_ServingStatus.SERVING,
      HealthCheckResponse_ServingStatus.NOT_SERVING,
    ]);
    expect(ended).toBeInstanceOf(ConnectError);
    expect((ended as ConnectError).code).toBe(Code.Unavailable);
  });
});
