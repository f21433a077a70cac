import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "@devex/gen/devex/core/v1/admin_pb.js";
import { AuthService } from "@devex/gen/devex/core/v1/auth_pb.js";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TemplateService } from "@devex/gen/devex/core/v1/template_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import { bufCurl } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";

const services = [AuthService, ReplService, TemplateService, AdminService];
let core: CoreProcess;
let apiKey: string;

beforeAll(async () => {
  core = await startCoreProcess();
  apiKey = await core.devApiKey();
});
afterAll(async () => {
  expect(await core.stop()).toBe(0);
  await core.cleanup();
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

  it("answers a Connect unary call from curl-style HTTP/1.1 JSON on the same port, with a key only", async () => {
    const call = (headers: Record<string, string>) =>
      fetch(`${core.url}/devex.core.v1.TemplateService/ListTemplates`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: "{}",
      });
    const refused = await call({});
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ code: "unauthenticated" });
    const listed = (await (await call({ authorization: `Bearer ${apiKey}` })).json()) as {
      templates: { name: string }[];
    };
    expect(listed.templates.map((t) => t.name)).toEqual(["blank", "node", "python"]);
  });

  it("serves the README's buf curl example with the printed dev key", async () => {
    const welcome = core.service.output.join("\n");
    expect(welcome).toContain(apiKey);
    const res = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-H",
      `Authorization: Bearer ${apiKey}`,
      "-d",
      '{"name":"from-buf-curl","templateName":"node"}',
      `${core.url}/devex.core.v1.ReplService/CreateRepl`,
    ]);
    expect(res.stderr).toBe("");
    expect(JSON.parse(res.stdout)).toMatchObject({ repl: { name: "from-buf-curl", state: "REPL_STATE_CREATED" } });
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
      "-H",
      `Authorization: Bearer ${apiKey}`,
      `${core.url}/devex.core.v1.ReplService/GetRepl`,
    ]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("invalid_argument");
    expect(res.stderr).toContain("repl_id");
  });
});
