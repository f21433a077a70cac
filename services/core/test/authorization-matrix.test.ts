import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "@devex/gen/devex/core/v1/admin_pb.js";
import { AuthService, Scope } from "@devex/gen/devex/core/v1/auth_pb.js";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TemplateService } from "@devex/gen/devex/core/v1/template_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";

/**
 * Every core RPC, enumerated from the service descriptors, called with missing, malformed,
 * revoked and under-scoped credentials and on another user's repl. A new RPC fails the
 * "covers every method" test until it has a sample request here.
 */
const services: DescService[] = [AuthService, ReplService, TemplateService, AdminService];
const methods = services.flatMap((service) => service.methods);
const publicMethods = new Set(["ListLoginProviders", "StartLogin", "CompleteLogin", "DevLogin"]);
const isRead = (method: DescMethod) => method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS;
const isAdmin = (method: DescMethod) => method.parent.typeName === AdminService.typeName;

interface Fixture {
  /** A repl of alice's, which bob must not see. */
  aliceReplId: string;
  aliceSessionId: string;
  aliceKeyId: string;
}

const fakeSnapshotId = `snap_${"0".repeat(26)}`;

/** A valid request for each method (valid so that validation never hides the refusal under test). */
const samples: Record<string, (f: Fixture) => Record<string, unknown>> = {
  GetCurrentUser: () => ({}),
  ListLoginProviders: () => ({}),
  StartLogin: () => ({ providerId: "dev" }),
  CompleteLogin: () => ({ providerId: "dev", code: "x", state: "x" }),
  DevLogin: () => ({ username: "mallory" }),
  Logout: () => ({}),
  ListSessions: () => ({}),
  RevokeSession: (f) => ({ sessionId: f.aliceSessionId }),
  CreateApiKey: () => ({ name: "k", scope: Scope.FULL }),
  ListApiKeys: () => ({}),
  RevokeApiKey: (f) => ({ apiKeyId: f.aliceKeyId }),
  CreateRepl: () => ({ name: "matrix", templateName: "blank" }),
  GetRepl: (f) => ({ repl: { case: "replId", value: f.aliceReplId } }),
  ListRepls: () => ({}),
  RenameRepl: (f) => ({ replId: f.aliceReplId, name: "renamed" }),
  UpdateRepl: (f) => ({ replId: f.aliceReplId, setLabels: { a: "b" } }),
  DeleteRepl: (f) => ({ replId: f.aliceReplId }),
  StartRepl: (f) => ({ replId: f.aliceReplId }),
  StopRepl: (f) => ({ replId: f.aliceReplId }),
  GetReplAccess: (f) => ({ replId: f.aliceReplId }),
  WatchRepl: (f) => ({ replId: f.aliceReplId }),
  ListSnapshots: (f) => ({ replId: f.aliceReplId }),
  CreateSnapshot: (f) => ({ replId: f.aliceReplId }),
  RestoreSnapshot: (f) => ({ replId: f.aliceReplId, snapshotId: fakeSnapshotId }),
  GetPreviewUrl: (f) => ({ replId: f.aliceReplId, port: 3000 }),
  SetPortVisibility: (f) => ({ replId: f.aliceReplId, port: 3000, public: true }),
  ListTemplates: () => ({}),
  GetTemplate: () => ({ name: "blank" }),
  ListAllRepls: () => ({}),
  ForceStopRepl: (f) => ({ replId: f.aliceReplId }),
  GetUsage: () => ({}),
  ListUsers: () => ({}),
};

/** Methods that act on a repl named by repl_id. */
const replScoped = new Set(
  methods.filter((m) => m.parent.typeName === ReplService.typeName && m.input.field.replId).map((m) => m.name),
);

let core: CoreProcess;
let fixture: Fixture;
let keys: { aliceFull: string; aliceReadOnly: string; bobFull: string; revoked: string };

function headersFor(credential: { bearer?: string; cookie?: string }): Interceptor {
  return (next) => (req) => {
    if (credential.bearer !== undefined) req.header.set("authorization", `Bearer ${credential.bearer}`);
    if (credential.cookie !== undefined) req.header.set("cookie", credential.cookie);
    return next(req);
  };
}

/** Calls one method with a credential; resolves with the Connect code ("ok" on success). */
async function call(method: DescMethod, credential: { bearer?: string; cookie?: string }): Promise<Code | "ok"> {
  const transport = createGrpcTransport({ baseUrl: core.url, interceptors: [headersFor(credential)] });
  const client = createClient(method.parent, transport) as unknown as Record<
    string,
    (request: unknown, options?: unknown) => unknown
  >;
  const sample = samples[method.name];
  if (!sample) throw new Error(`no sample request for ${method.name}`);
  const request = sample(fixture);
  const fn = client[method.localName];
  if (!fn) throw new Error(`no client method ${method.localName}`);
  try {
    if (method.methodKind === "server_streaming") {
      const abort = new AbortController();
      const stream = fn(request, { signal: abort.signal }) as AsyncIterable<unknown>;
      for await (const _ of stream) {
        abort.abort();
        break;
      }
    } else {
      await fn(request);
    }
    return "ok";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

/** Logs in with the dev login and returns the session cookie. */
async function devLogin(username: string): Promise<{ cookie: string; sessionId: string }> {
  let setCookie = "";
  const transport = createGrpcTransport({
    baseUrl: core.url,
    interceptors: [
      (next) => async (req) => {
        const res = await next(req);
        setCookie = res.header.get("set-cookie") ?? "";
        return res;
      },
    ],
  });
  const response = await createClient(AuthService, transport).devLogin({ username });
  const cookie = setCookie.split(";")[0] ?? "";
  expect(cookie).toMatch(/^devex_session=/);
  return { cookie, sessionId: response.session?.id ?? "" };
}

beforeAll(async () => {
  core = await startCoreProcess(["--auth-failure-limit", "100000"]);
  const alice = await devLogin("alice");
  const bob = await devLogin("bob");
  const aliceAuth = createClient(
    AuthService,
    createGrpcTransport({ baseUrl: core.url, interceptors: [headersFor(alice)] }),
  );
  const bobAuth = createClient(
    AuthService,
    createGrpcTransport({ baseUrl: core.url, interceptors: [headersFor(bob)] }),
  );
  const aliceFull = await aliceAuth.createApiKey({ name: "full", scope: Scope.FULL });
  const aliceReadOnly = await aliceAuth.createApiKey({ name: "read", scope: Scope.READ_ONLY });
  const bobFull = await bobAuth.createApiKey({ name: "full", scope: Scope.FULL });
  const revoked = await aliceAuth.createApiKey({ name: "revoked", scope: Scope.FULL });
  await aliceAuth.revokeApiKey({ apiKeyId: revoked.apiKey?.id ?? "" });
  keys = {
    aliceFull: aliceFull.secret,
    aliceReadOnly: aliceReadOnly.secret,
    bobFull: bobFull.secret,
    revoked: revoked.secret,
  };
  const aliceRepls = createClient(
    ReplService,
    createGrpcTransport({ baseUrl: core.url, interceptors: [headersFor({ bearer: keys.aliceFull })] }),
  );
  const { repl } = await aliceRepls.createRepl({ name: "alices", templateName: "blank" });
  fixture = { aliceReplId: repl?.id ?? "", aliceSessionId: alice.sessionId, aliceKeyId: aliceFull.apiKey?.id ?? "" };
});
afterAll(async () => {
  await core?.stop();
  await core?.cleanup();
});

describe("the authorization matrix of core", () => {
  it("covers every method of every core service", () => {
    expect(methods.length).toBeGreaterThanOrEqual(30);
    expect(methods.map((m) => m.name).filter((name) => !samples[name])).toEqual([]);
  });

  it("refuses every non-public method without a credential (Unauthenticated)", async () => {
    const refused: string[] = [];
    for (const method of methods.filter((m) => !publicMethods.has(m.name))) {
      if ((await call(method, {})) !== Code.Unauthenticated) refused.push(method.name);
    }
    expect(refused).toEqual([]);
  });

  it("refuses malformed, unknown and revoked API keys (Unauthenticated)", async () => {
    const bad = [
      "not-a-key",
      "dvx_",
      `dvx_${"0".repeat(26)}_${"A".repeat(43)}`,
      `${keys.aliceFull.slice(0, -4)}AAAA`,
      keys.revoked,
    ];
    const wrong: string[] = [];
    for (const method of methods.filter((m) => !publicMethods.has(m.name))) {
      for (const bearer of bad) {
        const code = await call(method, { bearer });
        if (code !== Code.Unauthenticated) wrong.push(`${method.name} with ${bearer.slice(0, 12)}: ${code}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("hides another user's repl (NotFound) on every repl-scoped method", async () => {
    expect(replScoped.size).toBeGreaterThanOrEqual(10);
    const wrong: string[] = [];
    for (const method of methods.filter((m) => replScoped.has(m.name))) {
      const code = await call(method, { bearer: keys.bobFull });
      if (code !== Code.NotFound) wrong.push(`${method.name}: ${code}`);
    }
    expect(wrong).toEqual([]);
  });

  it("lets a read-only key read but refuses every write (PermissionDenied)", async () => {
    const wrong: string[] = [];
    for (const method of methods.filter((m) => !publicMethods.has(m.name) && !isAdmin(m))) {
      const code = await call(method, { bearer: keys.aliceReadOnly });
      if (
        isRead(method)
          ? code === Code.PermissionDenied || code === Code.Unauthenticated
          : code !== Code.PermissionDenied
      ) {
        wrong.push(`${method.name} (${isRead(method) ? "read" : "write"}): ${code}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("refuses admin methods to a user who is not an admin, even with a full key (PermissionDenied)", async () => {
    const wrong: string[] = [];
    for (const method of AdminService.methods) {
      const code = await call(method, { bearer: keys.aliceFull });
      if (code !== Code.PermissionDenied) wrong.push(`${method.name}: ${code}`);
    }
    expect(wrong).toEqual([]);
    // The dev admin reaches them.
    expect(await call(AdminService.method.listUsers, { bearer: await core.devApiKey() })).toBe("ok");
  });

  it("refuses a cookie-authenticated call from a foreign origin (PermissionDenied)", async () => {
    const alice = await devLogin("alice");
    const res = await fetch(`${core.url}/devex.core.v1.AuthService/GetCurrentUser`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "connect-protocol-version": "1",
        cookie: alice.cookie,
        origin: "https://evil.example",
      },
      body: "{}",
    });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { code: string }).code).toBe("permission_denied");
  });
});
