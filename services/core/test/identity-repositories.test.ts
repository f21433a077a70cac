import { describe, expect, it } from "vitest";
import { addressBucket, clientAddressOf } from "../src/auth/client-address.js";
import { apiKeyIdOfSecret, createApiKeyRepository } from "../src/identity/api-keys.js";
import { createLoginStateRepository, type LoginStateRecord } from "../src/identity/login-states.js";
import { loginProvidersFromConfig, parseAdminIdentities } from "../src/identity/providers/from-config.js";
import { createRateLimiter } from "../src/identity/rate-limit.js";
import { sha256Hex } from "../src/identity/secrets.js";
import { createSessionRepository } from "../src/identity/sessions.js";
import { createUserRepository, type IdentityProfile, usersIndex } from "../src/identity/users.js";
import { createEmbeddedStore } from "../src/state/embedded.js";
import { testClock } from "./support/identity-harness.js";

const profile = (overrides: Partial<IdentityProfile>): IdentityProfile => ({
  providerId: "github",
  providerKind: "github",
  subject: "1",
  login: "someone",
  name: "",
  email: "",
  avatarUrl: "",
  ...overrides,
});

describe("users", () => {
  it("keeps bob@a.com, bob@b.com and GitHub user bob three users: users are matched by (provider, subject) only", async () => {
    const store = await createEmbeddedStore();
    const users = createUserRepository(store);
    const nowMs = Date.now();
    const a = await users.signIn(
      profile({ providerId: "okta", providerKind: "oidc", subject: "00u-a", login: "bob", email: "bob@a.com" }),
      { admin: false, nowMs },
    );
    const b = await users.signIn(
      profile({ providerId: "okta", providerKind: "oidc", subject: "00u-b", login: "bob", email: "bob@b.com" }),
      { admin: false, nowMs },
    );
    const gh = await users.signIn(profile({ subject: "583231", login: "bob", email: "bob@a.com" }), {
      admin: false,
      nowMs,
    });
    expect([a.created, b.created, gh.created]).toEqual([true, true, true]);
    expect(new Set([a.user.record.id, b.user.record.id, gh.user.record.id]).size).toBe(3);
    expect(await users.count()).toBe(3);

    // Signing in again with the same subject is the same user, even after a login rename.
    const again = await users.signIn(profile({ subject: "583231", login: "bob-renamed" }), { admin: false, nowMs });
    expect(again.created).toBe(false);
    expect(again.user.record.id).toBe(gh.user.record.id);
    expect(again.user.record.identities[0]?.login).toBe("bob-renamed");
    expect(await users.count()).toBe(3);
  });

  it("creates one user when two first logins of one identity race", async () => {
    const store = await createEmbeddedStore();
    const users = createUserRepository(store);
    const results = await Promise.all(
      Array.from({ length: 5 }, () => users.signIn(profile({ subject: "42" }), { admin: false, nowMs: Date.now() })),
    );
    expect(new Set(results.map((r) => r.user.record.id)).size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(await store.count(usersIndex)).toBe(1);
    expect((await users.findByIdentity("github", "42"))?.record.id).toBe(results[0]?.user.record.id);
  });

  it("links a second identity to a user, refuses one that belongs to someone else, and never demotes an admin", async () => {
    const store = await createEmbeddedStore();
    const users = createUserRepository(store);
    const nowMs = Date.now();
    const alice = await users.signIn(profile({ providerId: "dev", providerKind: "dev", subject: "alice" }), {
      admin: true,
      nowMs,
    });
    const bob = await users.signIn(profile({ subject: "7" }), { admin: false, nowMs });
    const linked = await users.signIn(profile({ providerId: "okta", providerKind: "oidc", subject: "s-1" }), {
      admin: false,
      nowMs,
      linkToUserId: alice.user.record.id,
    });
    expect(linked.user.record.id).toBe(alice.user.record.id);
    expect(linked.user.record.identities.map((i) => `${i.providerId}:${i.subject}`)).toEqual(["dev:alice", "okta:s-1"]);
    expect(linked.user.record.admin).toBe(true);
    await expect(
      users.signIn(profile({ subject: "7" }), { admin: false, nowMs, linkToUserId: alice.user.record.id }),
    ).rejects.toMatchObject({ code: 6 /* AlreadyExists */ });
    expect((await users.get(bob.user.record.id))?.record.identities).toHaveLength(1);
    const page = await users.list({ limit: 1 });
    // Newest first: ids sort by creation time.
    expect(page.users[0]?.record.id).toBe([alice.user.record.id, bob.user.record.id].sort().at(-1));
    expect(page.nextAfter).toBeDefined();
  });
});

describe("sessions", () => {
  it("stores only the secret's hash, checks it, slides the expiry at most once a minute, and ends", async () => {
    const clock = testClock();
    const store = await createEmbeddedStore({ now: clock.now });
    const sessions = createSessionRepository(store, { ttlMs: 3_600_000, now: clock.now });
    const { record, token } = await sessions.create({
      userId: "usr_x",
      providerId: "dev",
      userAgent: "ua",
      ipAddress: "::1",
    });
    const [id, secret] = token.split(".");
    expect(id).toBe(record.id);
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const raw = (await store.get(`session:${record.id}`))?.value ?? "";
    expect(raw).not.toContain(secret);
    expect(raw).toContain(sha256Hex(secret ?? ""));

    const ok = await sessions.verify(token);
    expect(ok.ok).toBe(true);
    expect(await sessions.verify(`${record.id}.${"A".repeat(43)}`)).toEqual({ ok: false, reason: "unknown" });
    expect(await sessions.verify("garbage")).toEqual({ ok: false, reason: "malformed" });
    if (!ok.ok) throw new Error("unreachable");

    clock.advance(30_000);
    expect(await sessions.touch(ok.session)).toBeUndefined();
    clock.advance(31_000);
    const touched = await sessions.touch(ok.session);
    expect(touched?.lastUsedAtMs).toBe(clock.ms);
    expect(touched?.expiresAtMs).toBe(clock.ms + 3_600_000);

    clock.advance(3_600_001);
    expect((await sessions.verify(token)).ok).toBe(false);
    expect(await sessions.listForUser("usr_x")).toEqual([]);
  });

  it("deletes only the owner's session", async () => {
    const store = await createEmbeddedStore();
    const sessions = createSessionRepository(store, { ttlMs: 60_000, now: Date.now });
    const { record } = await sessions.create({ userId: "usr_a", providerId: "dev", userAgent: "", ipAddress: "" });
    expect(await sessions.delete("usr_b", record.id)).toBe(false);
    expect(await sessions.get(record.id)).toBeDefined();
    expect(await sessions.delete("usr_a", record.id)).toBe(true);
    expect(await sessions.get(record.id)).toBeUndefined();
  });
});

describe("API keys", () => {
  it("embeds the key id in the secret, keeps a 12-character prefix and the SHA-256 only", async () => {
    const store = await createEmbeddedStore();
    const keys = createApiKeyRepository(store, { maxActivePerUser: 10, now: Date.now });
    const { record, secret } = await keys.create({ userId: "usr_a", name: "ci", scope: "read_only" });
    expect(secret).toMatch(/^dvx_[0-9a-z]{26}_[A-Za-z0-9_-]{43}$/);
    expect(apiKeyIdOfSecret(secret)).toBe(record.id);
    expect(record.prefix).toBe(secret.slice(0, 12));
    const raw = (await store.get(`apikey:${record.id}`))?.value ?? "";
    expect(raw).not.toContain(secret);
    expect(raw).toContain(sha256Hex(secret));
    expect((await keys.verify(secret)).ok).toBe(true);
    expect(await keys.verify(`${secret.slice(0, -1)}${secret.endsWith("A") ? "B" : "A"}`)).toMatchObject({
      ok: false,
      reason: "unknown",
      keyId: record.id,
    });
    expect(await keys.verify("dvx_short")).toEqual({ ok: false, reason: "malformed" });
  });

  it("holds the active-key limit under concurrent creations", async () => {
    const store = await createEmbeddedStore();
    const keys = createApiKeyRepository(store, { maxActivePerUser: 3, now: Date.now });
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => keys.create({ userId: "usr_a", name: `k${i}`, scope: "full" })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
    expect(results.filter((r) => r.status === "rejected").map((r) => (r.reason as { code: number }).code)).toEqual(
      Array(5).fill(8 /* ResourceExhausted */),
    );
  });

  it("lists newest first in pages, skipping revoked keys unless asked", async () => {
    const clock = testClock();
    const store = await createEmbeddedStore({ now: clock.now });
    const keys = createApiKeyRepository(store, { maxActivePerUser: 100, now: clock.now });
    const created = [];
    for (let i = 0; i < 5; i++) {
      created.push((await keys.create({ userId: "usr_a", name: `k${i}`, scope: "full" })).record);
      clock.advance(1);
    }
    await keys.revoke("usr_a", created[3]?.id ?? "");
    const first = await keys.list("usr_a", { limit: 2, includeRevoked: false });
    expect(first.keys.map((k) => k.name)).toEqual(["k4", "k2"]);
    const second = await keys.list("usr_a", { limit: 2, includeRevoked: false, after: first.nextAfter ?? "" });
    expect(second.keys.map((k) => k.name)).toEqual(["k1", "k0"]);
    expect(second.nextAfter).toBeUndefined();
    const all = await keys.list("usr_a", { limit: 10, includeRevoked: true });
    expect(all.keys.map((k) => k.name)).toEqual(["k4", "k3", "k2", "k1", "k0"]);
  });
});

describe("login states", () => {
  it("are consumed exactly once, even by concurrent completions, and not by a refused attempt", async () => {
    const store = await createEmbeddedStore();
    const states = createLoginStateRepository(store, Date.now);
    const record: LoginStateRecord = {
      state: "login_x",
      providerId: "github",
      codeVerifier: "v",
      nonce: "n",
      redirectUri: "http://localhost/cb",
      bindingHash: "h",
      createdAtMs: Date.now(),
      expiresAtMs: Date.now() + 60_000,
    };
    await states.create(record);
    expect(await states.consume("login_x", () => false)).toBeUndefined();
    const results = await Promise.all(Array.from({ length: 4 }, () => states.consume("login_x", () => true)));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await states.consume("login_x", () => true)).toBeUndefined();
  });
});

describe("rate limiter", () => {
  it("blocks a subject after maxFailures until its window ends, without counting checks", async () => {
    const clock = testClock();
    const store = await createEmbeddedStore({ now: clock.now });
    const limiter = createRateLimiter(store, { maxFailures: 3, windowMs: 60_000 }, clock.now);
    for (let i = 0; i < 10; i++) await limiter.check(["ip:a"]);
    await limiter.fail(["ip:a"]);
    await limiter.fail(["ip:a"]);
    await limiter.check(["ip:a"]);
    await limiter.fail(["ip:a"]);
    await expect(limiter.check(["ip:a"])).rejects.toMatchObject({ code: 8 });
    await expect(limiter.check(["ip:b", "ip:a"])).rejects.toMatchObject({ code: 8 });
    await limiter.check(["ip:b"]);
    clock.advance(60_001);
    await limiter.check(["ip:a"]);
  });
});

describe("client addresses", () => {
  const headers = (h: Record<string, string>) => (name: string) => h[name];
  it("ignores X-Forwarded-For unless proxies are trusted, then takes the entry the proxy added", () => {
    const h = headers({ "x-forwarded-for": "6.6.6.6, 203.0.113.9", "x-devex-client-address": "10.0.0.2" });
    expect(clientAddressOf(h, {}, "10.0.0.2")).toBe("10.0.0.2");
    expect(clientAddressOf(h, {})).toBe("unknown");
    expect(clientAddressOf(h, { trustProxy: true })).toBe("203.0.113.9");
    expect(clientAddressOf(h, { trustProxy: 2 })).toBe("6.6.6.6");
    expect(clientAddressOf(headers({}), {}, "::ffff:192.0.2.1")).toBe("192.0.2.1");
    expect(clientAddressOf(headers({}), {})).toBe("unknown");
  });
  it("buckets IPv6 addresses by /64", () => {
    expect(addressBucket("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(addressBucket("2001:db8:1:2:ffff:1:2:3")).toBe("2001:db8:1:2::/64");
    expect(addressBucket("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(addressBucket("192.0.2.1")).toBe("192.0.2.1");
  });
});

describe("provider configuration", () => {
  const base = {
    devLogin: false,
    githubClientId: undefined,
    githubClientSecret: undefined,
    githubUrl: "https://github.com",
    githubApiUrl: "https://api.github.com",
    oidcIssuer: undefined,
    oidcClientId: undefined,
    oidcClientSecret: undefined,
    oidcDisplayName: "Single sign-on",
    devLoginRemote: false,
  };
  it("enables the configured providers in display order and names half-configured ones", () => {
    expect(loginProvidersFromConfig(base)).toEqual([]);
    const all = loginProvidersFromConfig({
      ...base,
      devLogin: true,
      githubClientId: "id",
      githubClientSecret: "secret",
      oidcIssuer: "https://idp.example",
      oidcClientId: "devex",
    });
    expect(all.map((p) => `${p.id}:${p.kind}`)).toEqual(["oidc:oidc", "github:github", "dev:dev"]);
    expect(() => loginProvidersFromConfig({ ...base, githubClientId: "id" })).toThrow(/--github-client-secret/);
    expect(() => loginProvidersFromConfig({ ...base, oidcIssuer: "http://idp.example", oidcClientId: "x" })).toThrow(
      /https/,
    );
  });
  it("parses the admin identities", () => {
    expect(parseAdminIdentities(" github:12345, dev:alice ,")).toEqual(["github:12345", "dev:alice"]);
    expect(parseAdminIdentities(undefined)).toEqual([]);
    expect(() => parseAdminIdentities("alice")).toThrow(/provider id/);
  });
});
