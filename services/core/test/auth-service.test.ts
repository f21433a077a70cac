import { fromBinary } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { AdminService } from "@devex/gen/devex/core/v1/admin_pb.js";
import {
  ApiKeyState,
  AuthService,
  CredentialKind,
  LoginProviderKind,
  Scope,
} from "@devex/gen/devex/core/v1/auth_pb.js";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TemplateService } from "@devex/gen/devex/core/v1/template_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import { codeOf } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requiredScope } from "../src/auth/scopes.js";
import { createDevProvider } from "../src/identity/providers/dev.js";
import { RetryInfoSchema } from "../src/identity/rate-limit.js";
import { sha256Hex } from "../src/identity/secrets.js";
import { capture, cookieFrom, type IdentityServer, startIdentityServer } from "./support/identity-harness.js";

/** The error of a call that must fail. */
async function errorOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("the call succeeded");
}

/** Signs in with the dev login; returns the session cookie pair and the session id. */
async function signIn(server: IdentityServer, username: string, address?: string) {
  const seen = capture();
  const res = await server.client(AuthService, address ? { address } : {}).devLogin({ username }, seen.options);
  const cookie = cookieFrom(seen.headers(), "devex_session");
  if (!cookie) throw new Error("no session cookie");
  return { cookie: cookie.pair, attributes: cookie.attributes, sessionId: res.session?.id ?? "", res };
}

let server: IdentityServer;
beforeAll(async () => {
  server = await startIdentityServer({
    providers: [createDevProvider()],
    adminIdentities: ["dev:root"],
    allowedOrigins: ["https://app.devex.example"],
  });
});
afterAll(async () => {
  await server?.close();
});

describe("public and open calls", () => {
  it("lists the login providers without a credential and refuses GetCurrentUser without one", async () => {
    const { providers } = await server.client(AuthService).listLoginProviders({});
    expect(providers.map((p) => [p.id, p.kind])).toEqual([["dev", LoginProviderKind.DEV]]);
    const error = await errorOf(server.client(AuthService).getCurrentUser({}));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.rawMessage).toContain("needs a credential");
  });

  it("leaves gRPC health outside authentication", async () => {
    const health = await server.grpcClient(Health).check({});
    expect(health.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it("derives the scope of every core method from its descriptor", () => {
    const all = [AuthService, ReplService, TemplateService, AdminService].flatMap((s) => s.methods);
    const by = (name: string) => all.find((m) => m.name === name);
    expect(requiredScope(AuthService.method.getCurrentUser)).toBe("read_only");
    expect(requiredScope(AuthService.method.createApiKey)).toBe("full");
    expect(requiredScope(AuthService.method.revokeSession)).toBe("full");
    expect(by("WatchRepl") && requiredScope(by("WatchRepl") ?? AuthService.method.logout)).toBe("read_only");
    expect(requiredScope(ReplService.method.createRepl)).toBe("full");
    for (const method of AdminService.methods) expect(requiredScope(method)).toBe("admin");
  });
});

describe("browser sessions", () => {
  it("DevLogin sets an HttpOnly, SameSite=Lax session cookie that authenticates and holds only a hash server side", async () => {
    const alice = await signIn(server, "alice");
    expect(alice.res.userCreated).toBe(true);
    expect(alice.attributes).toMatch(/HttpOnly/);
    expect(alice.attributes).toMatch(/SameSite=Lax/);
    expect(alice.attributes).toMatch(/Path=\//);
    expect(alice.attributes).toMatch(/Max-Age=1209600/);
    expect(alice.attributes).not.toMatch(/Secure/);
    const [, value = ""] = alice.cookie.split("=");
    const [id, secret = ""] = value.split(".");
    expect(id).toBe(alice.sessionId);
    const stored = (await server.store.get(`session:${alice.sessionId}`))?.value ?? "";
    expect(stored).not.toContain(secret);
    expect(stored).toContain(sha256Hex(secret));

    const me = await server.client(AuthService, { cookie: alice.cookie }).getCurrentUser({});
    expect(me.user?.displayName).toBe("alice");
    expect(me.credential?.kind).toBe(CredentialKind.SESSION);
    expect(me.credential?.sessionId).toBe(alice.sessionId);
    expect(me.credential?.scope).toBe(Scope.FULL);

    const again = await signIn(server, "alice");
    expect(again.res.userCreated).toBe(false);
    expect(again.res.user?.id).toBe(alice.res.user?.id);
  });

  it("marks Secure when the public URL is https", async () => {
    const tls = await startIdentityServer({ providers: [createDevProvider()], publicUrl: "https://devex.example" });
    try {
      expect((await signIn(tls, "carol")).attributes).toMatch(/Secure/);
    } finally {
      await tls.close();
    }
  });

  it("lists one's sessions marking the current one, and revokes only one's own (NotFound for another user's)", async () => {
    const first = await signIn(server, "dana");
    server.clock.advance(1_000);
    const second = await signIn(server, "dana");
    const eve = await signIn(server, "eve");
    const dana = server.client(AuthService, { cookie: second.cookie });
    const { sessions } = await dana.listSessions({});
    expect(sessions.map((s) => s.id)).toEqual([second.sessionId, first.sessionId]);
    expect(sessions.map((s) => s.current)).toEqual([true, false]);

    const paged = await dana.listSessions({ pageSize: 1 });
    expect(paged.sessions.map((s) => s.id)).toEqual([second.sessionId]);
    const rest = await dana.listSessions({ pageSize: 1, pageToken: paged.nextPageToken });
    expect(rest.sessions.map((s) => s.id)).toEqual([first.sessionId]);
    expect(rest.nextPageToken).toBe("");

    expect(await codeOf(dana.revokeSession({ sessionId: eve.sessionId }))).toBe(Code.NotFound);
    expect(await codeOf(server.client(AuthService, { cookie: eve.cookie }).getCurrentUser({}))).toBe("ok");

    await dana.revokeSession({ sessionId: first.sessionId });
    expect(await codeOf(server.client(AuthService, { cookie: first.cookie }).getCurrentUser({}))).toBe(
      Code.Unauthenticated,
    );
    expect(await codeOf(dana.revokeSession({ sessionId: first.sessionId }))).toBe(Code.NotFound);
  });

  it("Logout ends the session and clears the cookie; a dead cookie is refused and cleared", async () => {
    const frank = await signIn(server, "frank");
    const client = server.client(AuthService, { cookie: frank.cookie });
    const seen = capture();
    await client.logout({}, seen.options);
    expect(cookieFrom(seen.headers(), "devex_session")?.attributes).toMatch(/Max-Age=0/);
    const error = await errorOf(client.getCurrentUser({}));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.metadata.getSetCookie().join()).toMatch(/devex_session=; Max-Age=0/);
  });

  it("Logout with an API key is FailedPrecondition", async () => {
    const gina = await signIn(server, "gina");
    const { secret } = await server
      .client(AuthService, { cookie: gina.cookie })
      .createApiKey({ name: "cli", scope: Scope.FULL });
    expect(await codeOf(server.client(AuthService, { bearer: secret }).logout({}))).toBe(Code.FailedPrecondition);
  });

  it("slides the expiry at most once a minute, renewing the cookie, and refuses an expired session", async () => {
    const henry = await signIn(server, "henry");
    const client = server.client(AuthService, { cookie: henry.cookie });
    const quiet = capture();
    await client.getCurrentUser({}, quiet.options);
    expect(cookieFrom(quiet.headers(), "devex_session")).toBeUndefined();

    server.clock.advance(61_000);
    const renewed = capture();
    const me = await client.getCurrentUser({}, renewed.options);
    expect(cookieFrom(renewed.headers(), "devex_session")?.pair).toBe(henry.cookie);
    expect(timestampMs(me.credential?.expiresAt ?? timestampFromMs(0))).toBe(server.clock.ms + 14 * 86_400_000);
    const listed = await client.listSessions({});
    expect(timestampMs(listed.sessions[0]?.lastUsedAt ?? timestampFromMs(0))).toBe(server.clock.ms);

    server.clock.advance(14 * 86_400_000 + 1);
    expect(await codeOf(client.getCurrentUser({}))).toBe(Code.Unauthenticated);
  });
});

describe("cross-site request forgery", () => {
  const post = (cookie: string, headers: Record<string, string>) =>
    fetch(`${server.url}/devex.core.v1.AuthService/GetCurrentUser`, {
      method: "POST",
      headers: { "content-type": "application/json", cookie, ...headers },
      body: "{}",
    });

  it("refuses a cookie call without Connect-Protocol-Version or from a foreign Origin", async () => {
    const ivy = await signIn(server, "ivy");
    const bare = await post(ivy.cookie, {});
    expect(bare.status).toBe(403);
    expect(((await bare.json()) as { code: string }).code).toBe("permission_denied");
    const foreign = await post(ivy.cookie, { "connect-protocol-version": "1", origin: "https://evil.example" });
    expect(foreign.status).toBe(403);
    await foreign.body?.cancel();

    for (const origin of [new URL(server.url).origin, "https://app.devex.example"]) {
      const res = await post(ivy.cookie, { "connect-protocol-version": "1", origin });
      expect(res.status, origin).toBe(200);
      await res.body?.cancel();
    }
  });

  it("accepts the cookie over gRPC, and does not apply the checks to bearer calls", async () => {
    const jay = await signIn(server, "jay");
    const me = await server.grpcClient(AuthService, { cookie: jay.cookie }).getCurrentUser({});
    expect(me.credential?.kind).toBe(CredentialKind.SESSION);
    const { secret } = await server
      .client(AuthService, { cookie: jay.cookie })
      .createApiKey({ name: "k", scope: Scope.READ_ONLY });
    const res = await fetch(`${server.url}/devex.core.v1.AuthService/GetCurrentUser`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${secret}`,
        origin: "https://evil.example",
      },
      body: "{}",
    });
    expect(res.status).toBe(200);
    await res.body?.cancel();
  });
});

describe("API keys", () => {
  it("shows the secret once, lists the prefix, revokes idempotently and then refuses the key", async () => {
    const kim = await signIn(server, "kim");
    const session = server.client(AuthService, { cookie: kim.cookie });
    const created = await session.createApiKey({ name: "laptop CLI", scope: Scope.FULL });
    const key = created.apiKey;
    expect(created.secret).toMatch(/^dvx_[0-9a-z]{26}_[A-Za-z0-9_-]{43}$/);
    expect(created.secret.slice(4, 30)).toBe(key?.id.slice(4));
    expect(key?.prefix).toBe(created.secret.slice(0, 12));
    expect(key?.state).toBe(ApiKeyState.ACTIVE);

    const listed = await session.listApiKeys({});
    expect(listed.apiKeys.map((k) => k.id)).toEqual([key?.id]);
    expect(listed.apiKeys[0]?.prefix).toBe(created.secret.slice(0, 12));
    expect(JSON.stringify(listed, (_, v) => (typeof v === "bigint" ? String(v) : v))).not.toContain(
      created.secret.slice(12),
    );
    expect(listed.apiKeys[0]?.lastUsedAt).toBeUndefined();

    const byKey = server.client(AuthService, { bearer: created.secret });
    const me = await byKey.getCurrentUser({});
    expect(me.user?.id).toBe(kim.res.user?.id);
    expect(me.credential?.kind).toBe(CredentialKind.API_KEY);
    expect(me.credential?.apiKeyId).toBe(key?.id);
    expect(me.credential?.expiresAt).toBeUndefined();

    // Last use: recorded on first use, then at most once a minute.
    const firstUse = (await session.listApiKeys({})).apiKeys[0]?.lastUsedAt;
    expect(firstUse && timestampMs(firstUse)).toBe(server.clock.ms);
    server.clock.advance(30_000);
    await byKey.getCurrentUser({});
    expect((await session.listApiKeys({})).apiKeys[0]?.lastUsedAt).toEqual(firstUse);
    server.clock.advance(31_000);
    await byKey.getCurrentUser({});
    const later = (await session.listApiKeys({})).apiKeys[0]?.lastUsedAt;
    expect(later && timestampMs(later)).toBe(server.clock.ms);

    const revoked = await byKey.revokeApiKey({ apiKeyId: key?.id ?? "" });
    expect(revoked.apiKey?.state).toBe(ApiKeyState.REVOKED);
    expect(revoked.apiKey?.revokedAt).toBeDefined();
    const again = await session.revokeApiKey({ apiKeyId: key?.id ?? "" });
    expect(again.apiKey?.revokedAt).toEqual(revoked.apiKey?.revokedAt);

    const error = await errorOf(byKey.getCurrentUser({}));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.rawMessage).toContain("revoked");
    expect((await session.listApiKeys({})).apiKeys).toEqual([]);
    expect((await session.listApiKeys({ includeRevoked: true })).apiKeys[0]?.state).toBe(ApiKeyState.REVOKED);
  });

  it("refuses an expired key", async () => {
    const lee = await signIn(server, "lee");
    const session = server.client(AuthService, { cookie: lee.cookie });
    const { secret, apiKey } = await session.createApiKey({
      name: "short",
      scope: Scope.READ_ONLY,
      expiresAt: timestampFromMs(server.clock.ms + 3_600_000),
    });
    expect(apiKey?.expiresAt).toBeDefined();
    expect((await server.client(AuthService, { bearer: secret }).getCurrentUser({})).credential?.expiresAt).toEqual(
      apiKey?.expiresAt,
    );
    server.clock.advance(3_600_001);
    const error = await errorOf(server.client(AuthService, { bearer: secret }).getCurrentUser({}));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.rawMessage).toContain("expired");
    expect((await session.listApiKeys({})).apiKeys[0]?.state).toBe(ApiKeyState.EXPIRED);
  });

  it("revokes only one's own keys (NotFound for another user's)", async () => {
    const max = await signIn(server, "max");
    const nia = await signIn(server, "nia");
    const { apiKey, secret } = await server
      .client(AuthService, { cookie: nia.cookie })
      .createApiKey({ name: "n", scope: Scope.FULL });
    expect(
      await codeOf(server.client(AuthService, { cookie: max.cookie }).revokeApiKey({ apiKeyId: apiKey?.id ?? "" })),
    ).toBe(Code.NotFound);
    expect(await codeOf(server.client(AuthService, { bearer: secret }).getCurrentUser({}))).toBe("ok");
  });
});

describe("scopes", () => {
  it("lets a read-only key read but not write", async () => {
    const olga = await signIn(server, "olga");
    const { secret, apiKey } = await server
      .client(AuthService, { cookie: olga.cookie })
      .createApiKey({ name: "ro", scope: Scope.READ_ONLY });
    const ro = server.client(AuthService, { bearer: secret });
    expect((await ro.getCurrentUser({})).credential?.scope).toBe(Scope.READ_ONLY);
    expect(await codeOf(ro.listApiKeys({}))).toBe("ok");
    expect(await codeOf(ro.listSessions({}))).toBe("ok");
    const error = await errorOf(ro.createApiKey({ name: "escalate", scope: Scope.READ_ONLY }));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.rawMessage).toContain("needs scope full");
    expect(await codeOf(ro.revokeApiKey({ apiKeyId: apiKey?.id ?? "" }))).toBe(Code.PermissionDenied);
    const repls = server.client(ReplService, { bearer: secret });
    expect(await codeOf(repls.createRepl({ name: "x", templateName: "t" }))).toBe(Code.PermissionDenied);
    // Unimplemented here: the read got through authentication and the scope check.
    expect(await codeOf(repls.listRepls({}))).toBe(Code.Unimplemented);
  });

  it("keeps admin to admin users with admin credentials", async () => {
    const pat = await signIn(server, "pat");
    const patSession = server.client(AuthService, { cookie: pat.cookie });
    expect(await codeOf(patSession.createApiKey({ name: "a", scope: Scope.ADMIN }))).toBe(Code.PermissionDenied);
    expect(await codeOf(server.client(AdminService, { cookie: pat.cookie }).listUsers({}))).toBe(Code.PermissionDenied);

    const root = await signIn(server, "root");
    expect(root.res.user?.admin).toBe(true);
    const rootSession = server.client(AuthService, { cookie: root.cookie });
    expect((await rootSession.getCurrentUser({})).credential?.scope).toBe(Scope.ADMIN);
    // Unimplemented: the call got through authentication and the admin check.
    expect(await codeOf(server.client(AdminService, { cookie: root.cookie }).listUsers({}))).toBe(Code.Unimplemented);
    const full = await rootSession.createApiKey({ name: "full", scope: Scope.FULL });
    const admin = await rootSession.createApiKey({ name: "admin", scope: Scope.ADMIN });
    const fullError = await errorOf(server.client(AdminService, { bearer: full.secret }).listUsers({}));
    expect(fullError.code).toBe(Code.PermissionDenied);
    expect(fullError.rawMessage).toContain("needs scope admin");
    expect(await codeOf(server.client(AdminService, { bearer: admin.secret }).listUsers({}))).toBe(Code.Unimplemented);
    // A full key cannot mint an admin key, even for an admin user.
    expect(
      await codeOf(
        server.client(AuthService, { bearer: full.secret }).createApiKey({ name: "up", scope: Scope.ADMIN }),
      ),
    ).toBe(Code.PermissionDenied);

    // An admin key acts as full once its user is no longer an admin.
    const userKey = `user:${root.res.user?.id}`;
    const stored = await server.store.get(userKey);
    await server.store.commit({
      puts: [{ key: userKey, value: JSON.stringify({ ...JSON.parse(stored?.value ?? "{}"), admin: false }) }],
    });
    expect(await codeOf(server.client(AdminService, { bearer: admin.secret }).listUsers({}))).toBe(
      Code.PermissionDenied,
    );
    expect((await server.client(AuthService, { bearer: admin.secret }).getCurrentUser({})).credential?.scope).toBe(
      Scope.FULL,
    );
  });
});

describe("rate limiting", () => {
  const badKey = () => `dvx_${"0123456789abcdefghjkmnpqrs"}_${"B".repeat(43)}`;

  it("refuses a client address after N bad credentials, with retry-after and RetryInfo, even for a correct key", async () => {
    const limited = await startIdentityServer({
      // Its users sign in from addresses of their own.
      providers: [createDevProvider({ remote: true })],
      rateLimit: { maxFailures: 5, windowMs: 60_000 },
    });
    try {
      const me = await signIn(limited, "quinn", "198.51.100.1");
      const { secret } = await limited
        .client(AuthService, { cookie: me.cookie, address: "198.51.100.1" })
        .createApiKey({ name: "good", scope: Scope.FULL });
      // Successful calls are not counted.
      for (let i = 0; i < 10; i++) {
        await limited.client(AuthService, { bearer: secret, address: "203.0.113.7" }).getCurrentUser({});
      }
      for (let i = 0; i < 5; i++) {
        const bearer = i % 2 ? badKey() : "not-a-key";
        expect(await codeOf(limited.client(AuthService, { bearer, address: "203.0.113.7" }).getCurrentUser({}))).toBe(
          Code.Unauthenticated,
        );
      }
      const error = await errorOf(
        limited.client(AuthService, { bearer: badKey(), address: "203.0.113.7" }).getCurrentUser({}),
      );
      expect(error.code).toBe(Code.ResourceExhausted);
      const retryAfter = Number(error.metadata.get("retry-after"));
      expect(retryAfter).toBeGreaterThan(0);
      expect(retryAfter).toBeLessThanOrEqual(60);
      expect(error.rawMessage).toMatch(/retry after \d+ s \(at \d{4}-/);
      const info = error.findDetails(RetryInfoSchema)[0] as { retryDelay?: { seconds: bigint } } | undefined;
      expect(info?.retryDelay?.seconds).toBe(BigInt(retryAfter));

      // The correct key from the limited address is refused too (see the interceptor: no oracle).
      expect(
        await codeOf(limited.client(AuthService, { bearer: secret, address: "203.0.113.7" }).getCurrentUser({})),
      ).toBe(Code.ResourceExhausted);
      // A cookie from that address as well; other addresses are unaffected.
      expect(
        await codeOf(limited.client(AuthService, { cookie: me.cookie, address: "203.0.113.7" }).getCurrentUser({})),
      ).toBe(Code.ResourceExhausted);
      expect(
        await codeOf(limited.client(AuthService, { bearer: secret, address: "203.0.113.8" }).getCurrentUser({})),
      ).toBe("ok");
      // IPv6 neighbours in the same /64 share the limit.
      for (let i = 1; i <= 5; i++) {
        await codeOf(limited.client(AuthService, { bearer: "x", address: `2001:db8:0:1::${i}` }).getCurrentUser({}));
      }
      expect(
        await codeOf(limited.client(AuthService, { bearer: secret, address: "2001:db8:0:1::99" }).getCurrentUser({})),
      ).toBe(Code.ResourceExhausted);

      limited.clock.advance(60_001);
      expect(
        await codeOf(limited.client(AuthService, { bearer: secret, address: "203.0.113.7" }).getCurrentUser({})),
      ).toBe("ok");
    } finally {
      await limited.close();
    }
  });

  it("limits guesses at one API key id per address, so a stranger cannot lock the key's owner out", async () => {
    const limited = await startIdentityServer({
      providers: [createDevProvider()],
      rateLimit: { maxFailures: 3, windowMs: 60_000 },
    });
    try {
      const me = await signIn(limited, "rae");
      const { secret } = await limited
        .client(AuthService, { cookie: me.cookie })
        .createApiKey({ name: "target", scope: Scope.FULL });
      const wrong = `${secret.slice(0, 31)}${"C".repeat(43)}`;
      // A stranger guessing from many addresses, several times from each.
      for (let i = 0; i < 3; i++) {
        for (let j = 0; j < 3; j++) {
          expect(
            await codeOf(limited.client(AuthService, { bearer: wrong, address: `192.0.2.${i}` }).getCurrentUser({})),
          ).toBe(Code.Unauthenticated);
        }
        // That address is limited now, for the stranger.
        expect(
          await codeOf(limited.client(AuthService, { bearer: wrong, address: `192.0.2.${i}` }).getCurrentUser({})),
        ).toBe(Code.ResourceExhausted);
      }
      // The owner, from anywhere else, is not.
      expect(
        await codeOf(limited.client(AuthService, { bearer: secret, address: "198.51.100.20" }).getCurrentUser({})),
      ).toBe("ok");
    } finally {
      await limited.close();
    }
  });

  it("admits the dev login from this machine only, unless other addresses are allowed", async () => {
    const local = await startIdentityServer({ providers: [createDevProvider()] });
    const anywhere = await startIdentityServer({ providers: [createDevProvider({ remote: true })] });
    try {
      expect(await codeOf(local.client(AuthService, { address: "127.0.0.1" }).devLogin({ username: "here" }))).toBe(
        "ok",
      );
      expect(await codeOf(local.client(AuthService, { address: "::1" }).devLogin({ username: "here" }))).toBe("ok");
      const error = await errorOf(local.client(AuthService, { address: "192.0.2.9" }).devLogin({ username: "there" }));
      expect(error.code).toBe(Code.PermissionDenied);
      expect(error.rawMessage).toContain("--dev-login-remote");
      expect(await codeOf(anywhere.client(AuthService, { address: "192.0.2.9" }).devLogin({ username: "there" }))).toBe(
        "ok",
      );
    } finally {
      await local.close();
      await anywhere.close();
    }
  });

  it("counts failed logins: dev login disabled and unknown login states", async () => {
    const limited = await startIdentityServer({ rateLimit: { maxFailures: 3, windowMs: 60_000 } });
    try {
      const auth = limited.client(AuthService, { address: "192.0.2.50" });
      expect(await codeOf(auth.devLogin({ username: "x" }))).toBe(Code.FailedPrecondition);
      expect(await codeOf(auth.completeLogin({ providerId: "github", code: "c", state: "s" }))).toBe(Code.NotFound);
      expect(await codeOf(auth.devLogin({ username: "x" }))).toBe(Code.FailedPrecondition);
      const error = await errorOf(auth.devLogin({ username: "x" }));
      expect(error.code).toBe(Code.ResourceExhausted);
      expect(error.metadata.get("retry-after")).toMatch(/^\d+$/);
      expect(await codeOf(limited.client(AuthService, { address: "192.0.2.51" }).devLogin({ username: "x" }))).toBe(
        Code.FailedPrecondition,
      );
    } finally {
      await limited.close();
    }
  });
});

describe("API key limit", () => {
  it("refuses more active keys than allowed (ResourceExhausted), and counts revoked keys out", async () => {
    const small = await startIdentityServer({ providers: [createDevProvider()], maxActiveApiKeysPerUser: 2 });
    try {
      const me = await signIn(small, "sam");
      const auth = small.client(AuthService, { cookie: me.cookie });
      const first = await auth.createApiKey({ name: "1", scope: Scope.FULL });
      await auth.createApiKey({ name: "2", scope: Scope.FULL });
      expect(await codeOf(auth.createApiKey({ name: "3", scope: Scope.FULL }))).toBe(Code.ResourceExhausted);
      await auth.revokeApiKey({ apiKeyId: first.apiKey?.id ?? "" });
      expect(await codeOf(auth.createApiKey({ name: "3", scope: Scope.FULL }))).toBe("ok");
    } finally {
      await small.close();
    }
  });
});

describe("the RetryInfo descriptor", () => {
  it("decodes what the server encodes", () => {
    const bytes = new Uint8Array([10, 2, 8, 42]);
    const info = fromBinary(RetryInfoSchema, bytes) as unknown as { retryDelay?: { seconds: bigint } };
    expect(info.retryDelay?.seconds).toBe(42n);
  });
});
