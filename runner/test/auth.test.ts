import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { Health } from "@devex/gen/grpc/health/v1/health_pb.js";
import { runnerTokenAlgorithm, runnerTokenIssuer, signRunnerToken } from "@devex/kit";
import { generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestRunner, type TestRunner } from "./harness.js";

const services: DescService[] = [TerminalService, FilesystemService, ProcessService, RunnerService];
let t: TestRunner;

beforeAll(async () => {
  t = await startTestRunner();
});
afterAll(async () => {
  await t.close();
});

/** Calls any method with an empty request and the given Authorization header; resolves with the error code. */
async function call(service: DescService, method: DescMethod, authorization: string | undefined): Promise<Code | "ok"> {
  const auth: Interceptor = (next) => (req) => {
    if (authorization !== undefined) req.header.set("authorization", authorization);
    return next(req);
  };
  const client = createClient(service, createGrpcTransport({ baseUrl: t.url, interceptors: [auth] })) as Record<
    string,
    (input: unknown, options?: { signal?: AbortSignal }) => unknown
  >;
  const fn = client[method.localName] as (input: unknown, options?: object) => unknown;
  const input = create(method.input);
  const abort = new AbortController();
  try {
    switch (method.methodKind) {
      case "unary":
        await fn(input, { signal: abort.signal });
        break;
      case "server_streaming":
        for await (const _ of fn(input, { signal: abort.signal }) as AsyncIterable<unknown>) break;
        break;
      default: {
        async function* one() {
          yield input;
        }
        const result = fn(one(), { signal: abort.signal });
        if (method.methodKind === "client_streaming") await result;
        else for await (const _ of result as AsyncIterable<unknown>) break;
      }
    }
    return "ok";
  } catch (error) {
    return ConnectError.from(error).code;
  } finally {
    abort.abort();
  }
}

const methods = services.flatMap((service) => service.methods.map((method) => ({ service, method })));

describe("every runner RPC requires a valid token for this repl", async () => {
  it("covers every method of the four services", () => {
    expect(methods.length).toBeGreaterThanOrEqual(30);
  });

  const { privateKey: strangerKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const credentials: [string, () => Promise<string | undefined>][] = [
    ["no token", async () => undefined],
    ["not a bearer token", async () => `Basic ${Buffer.from("user:pass").toString("base64")}`],
    ["malformed token", async () => "Bearer not.a.jwt"],
    ["expired token", async () => `Bearer ${await t.token("core", -60_000)}`],
    [
      "token for another repl",
      async () =>
        `Bearer ${await signRunnerToken(t.privateKey, { replId: "repl_00000000000000000000000000", userId: "usr_x", role: "core", ttlMs: 60_000 })}`,
    ],
    [
      "token signed by another key",
      async () =>
        `Bearer ${await signRunnerToken(strangerKey, { replId: t.replId, userId: "usr_x", role: "core", ttlMs: 60_000 })}`,
    ],
  ];

  for (const [name, header] of credentials) {
    it(`refuses a ${name} with UNAUTHENTICATED on all ${methods.length} methods`, async () => {
      const authorization = await header();
      for (const { service, method } of methods) {
        expect(await call(service, method, authorization), `${service.typeName}/${method.name}`).toBe(
          Code.Unauthenticated,
        );
      }
    });
  }

  it("keeps RunnerService for core: a user's token gets PERMISSION_DENIED", async () => {
    const authorization = `Bearer ${await t.token("user")}`;
    for (const method of RunnerService.methods) {
      expect(await call(RunnerService, method, authorization), method.name).toBe(Code.PermissionDenied);
    }
  });

  it("keeps the user services for users: core's token gets PERMISSION_DENIED", async () => {
    const authorization = `Bearer ${await t.token("core")}`;
    for (const { service, method } of methods.filter(({ service }) => service !== RunnerService)) {
      expect(await call(service, method, authorization), `${service.typeName}/${method.name}`).toBe(
        Code.PermissionDenied,
      );
    }
  });

  it("refuses a token with any other role (admin, none) with UNAUTHENTICATED on every method", async () => {
    for (const role of ["admin", undefined]) {
      const token = await new SignJWT(role === undefined ? {} : { role })
        .setProtectedHeader({ alg: runnerTokenAlgorithm, typ: "JWT" })
        .setIssuer(runnerTokenIssuer)
        .setAudience(t.replId)
        .setSubject("usr_x")
        .setIssuedAt()
        .setExpirationTime(new Date(Date.now() + 60_000))
        .sign(t.privateKey);
      for (const { service, method } of methods) {
        expect(await call(service, method, `Bearer ${token}`), `${role} ${service.typeName}/${method.name}`).toBe(
          Code.Unauthenticated,
        );
      }
    }
  });

  it("lets a valid token of the right role through (the call then fails or succeeds on its own merits)", async () => {
    const user = `Bearer ${await t.token("user")}`;
    const core = `Bearer ${await t.token("core")}`;
    for (const { service, method } of methods) {
      const result = await call(service, method, service === RunnerService ? core : user);
      expect([Code.Unauthenticated, Code.PermissionDenied], `${service.typeName}/${method.name}`).not.toContain(result);
    }
  });

  it("leaves health open", async () => {
    const client = createClient(Health, createGrpcTransport({ baseUrl: t.url }));
    await expect(client.check({})).resolves.toBeDefined();
  });
});
