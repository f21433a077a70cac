import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "@devex/gen/devex/core/v1/admin_pb.js";
import { AuthService } from "@devex/gen/devex/core/v1/auth_pb.js";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TemplateService } from "@devex/gen/devex/core/v1/template_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import { bufCurl, type SpawnedService, spawnService } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const services = [AuthService, ReplService, TemplateService, AdminService];
let core: SpawnedService;

beforeAll(async () => {
  core = await spawnService("services/core/src/main.ts");
});
afterAll(async () => {
  expect(await core.stop()).toBe(0);
});

describe("npm run core", () => {
  it("lists every RPC of the four core services over h2c with buf curl", async () => {
    const { code, stdout } = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--list-methods",
      core.url,
    ]);
    expect(code).toBe(0);
    const listed = new Set(stdout.trim().split("\n"));
    const expected = services.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));
    expect(expected.length).toBeGreaterThanOrEqual(30);
    for (const method of expected) expect(listed, method).toContain(method);
  });

  it("answers a Connect unary call from curl-style HTTP/1.1 JSON on the same port", async () => {
    const res = await fetch(`${core.url}/devex.core.v1.TemplateService/ListTemplates`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(await res.json()).toMatchObject({ code: "unimplemented" });
  });

  it("reports SERVING and refuses an invalid repl id naming the field", async () => {
    const transport = createGrpcTransport({ baseUrl: core.url });
    const health = await createClient(Health, transport).check({});
    expect(health.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const res = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      '{"replId":"not-an-id"}',
      `${core.url}/devex.core.v1.ReplService/GetRepl`,
    ]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("invalid_argument");
    expect(res.stderr).toContain("repl_id");
  });
});
