import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Code } from "@connectrpc/connect";
import { AuthService, LoginProviderKind } from "@devex/gen/devex/core/v1/auth_pb.js";
import { codeOf } from "@devex/kit/testing";
import { exportJWK, generateKeyPair } from "jose";
import { Provider } from "oidc-provider";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOidcProvider } from "../src/identity/providers/oidc.js";
import { TestBrowser } from "./support/identity-browser.js";
import { capture, type IdentityServer, startIdentityServer } from "./support/identity-harness.js";

/** The people of the test identity provider, by `sub`. */
const accounts: Record<string, { email: string; preferred_username: string; name: string }> = {
  "00u-alice": { email: "alice@corp.example", preferred_username: "alice", name: "Alice Liddell" },
  "00u-bob-a": { email: "bob@a.com", preferred_username: "bob", name: "Bob A" },
  "00u-bob-b": { email: "bob@b.com", preferred_username: "bob", name: "Bob B" },
};

let idp: Server;
let issuer: string;
let provider: Provider;
/** Who signs in at the identity provider's login prompt. */
let signingInAs = "00u-alice";
let server: IdentityServer;
const clientSecret = "devex-test-client-secret-0123456789";

/** The identity provider's login and consent prompts, answered at once for `signingInAs`. */
async function interaction(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === "login") {
    await provider.interactionFinished(req, res, { login: { accountId: signingInAs } });
    return;
  }
  const grant = new provider.Grant({
    accountId: details.session?.accountId ?? signingInAs,
    clientId: String(details.params.client_id),
  });
  if (details.prompt.details.missingOIDCScope) grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(" "));
  if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
  await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } });
}

beforeAll(async () => {
  // The identity provider's port comes first: core needs its issuer, it needs core's callback URL.
  let handle: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end();
  idp = createServer((req, res) => handle(req, res));
  await new Promise<void>((resolve) => idp.listen(0, "127.0.0.1", resolve));
  issuer = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;

  server = await startIdentityServer({
    providers: [
      createOidcProvider({
        id: "corp",
        displayName: "Corp SSO",
        issuer,
        clientId: "devex",
        clientSecret,
      }),
    ],
  });

  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  provider = new Provider(issuer, {
    clients: [
      {
        client_id: "devex",
        client_secret: clientSecret,
        redirect_uris: [`${server.url}/auth/callback/corp`],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    async findAccount(_ctx: unknown, sub: string) {
      const account = accounts[sub];
      return account && { accountId: sub, claims: async () => ({ sub, email_verified: true, ...account }) };
    },
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name", "preferred_username"] },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx: unknown, i: { uid: string }) => `/interaction/${i.uid}` },
    pkce: { required: () => true },
    ttl: { Interaction: 600, Session: 3_600, Grant: 3_600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
    cookies: { keys: ["oidc-test-cookie-key"] },
    jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: "test", alg: "RS256", use: "sig" }] },
  });
  const callback = provider.callback();
  handle = (req, res) => {
    if (req.url?.startsWith("/interaction/")) {
      interaction(req, res).catch((error: unknown) => {
        res.statusCode = 500;
        res.end(String(error));
      });
      return;
    }
    callback(req, res);
  };
});
afterAll(async () => {
  await server?.close();
  idp?.closeAllConnections();
  await new Promise((resolve) => idp?.close(resolve));
});

const isCallback = (url: URL) => url.pathname.startsWith("/auth/callback/");

/** StartLogin, then the identity provider's pages up to the redirect back; then CompleteLogin. */
async function login(browser: TestBrowser, as: string) {
  signingInAs = as;
  const seen = capture();
  const started = await server.client(AuthService).startLogin({ providerId: "corp" }, seen.options);
  browser.store(seen.headers());
  const back = await browser.navigate(started.authorizationUrl, isCallback);
  const code = back.url.searchParams.get("code");
  if (!code) throw new Error(`no code in ${back.url.href}`);
  expect(back.url.searchParams.get("state")).toBe(started.state);
  const done = capture();
  const res = await server
    .client(AuthService, { cookie: browser.cookieHeader() })
    .completeLogin({ providerId: "corp", code, state: started.state }, done.options);
  browser.store(done.headers());
  return { res, started, code };
}

describe("OpenID Connect login against a real provider (oidc-provider)", () => {
  it("is listed with its display name", async () => {
    const { providers } = await server.client(AuthService).listLoginProviders({});
    expect(providers.map((p) => [p.id, p.kind, p.displayName])).toEqual([["corp", LoginProviderKind.OIDC, "Corp SSO"]]);
  });

  it("discovers the issuer and asks for the code flow with PKCE, state and nonce", async () => {
    const started = await server.client(AuthService).startLogin({ providerId: "corp" });
    const url = new URL(started.authorizationUrl);
    expect(url.origin).toBe(issuer);
    expect(url.searchParams.get("response_type")).toBe("code");
    expect(url.searchParams.get("code_challenge_method")).toBe("S256");
    expect(url.searchParams.get("nonce")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(url.searchParams.get("state")).toBe(started.state);
    expect(url.searchParams.get("scope")).toBe("openid profile email");
  });

  it("creates the user from `sub` on first login, signs the same user in again, and a different `sub` is another user", async () => {
    const first = await login(new TestBrowser(), "00u-alice");
    expect(first.res.userCreated).toBe(true);
    expect(first.res.user?.identities.map((i) => [i.providerId, i.subject, i.login, i.email])).toEqual([
      ["corp", "00u-alice", "alice", "alice@corp.example"],
    ]);
    expect(first.res.user?.displayName).toBe("Alice Liddell");

    const browser = new TestBrowser();
    const second = await login(browser, "00u-alice");
    expect(second.res.userCreated).toBe(false);
    expect(second.res.user?.id).toBe(first.res.user?.id);
    const me = await server.client(AuthService, { cookie: browser.cookieHeader() }).getCurrentUser({});
    expect(me.user?.id).toBe(first.res.user?.id);

    const bobA = await login(new TestBrowser(), "00u-bob-a");
    const bobB = await login(new TestBrowser(), "00u-bob-b");
    expect(bobA.res.userCreated).toBe(true);
    expect(bobB.res.userCreated).toBe(true);
    expect(new Set([first.res.user?.id, bobA.res.user?.id, bobB.res.user?.id]).size).toBe(3);
  });

  it("refuses a replayed code and state (FailedPrecondition) and a wrong code (Unauthenticated)", async () => {
    const browser = new TestBrowser();
    const { started, code } = await login(browser, "00u-alice");
    expect(
      await codeOf(
        server
          .client(AuthService, { cookie: browser.cookieHeader() })
          .completeLogin({ providerId: "corp", code, state: started.state }),
      ),
    ).toBe(Code.FailedPrecondition);

    const other = new TestBrowser();
    const seen = capture();
    const fresh = await server.client(AuthService).startLogin({ providerId: "corp" }, seen.options);
    other.store(seen.headers());
    expect(
      await codeOf(
        server
          .client(AuthService, { cookie: other.cookieHeader() })
          .completeLogin({ providerId: "corp", code: "forged-code", state: fresh.state }),
      ),
    ).toBe(Code.Unauthenticated);
  });

  it("completes through the browser callback route too (the redirect's iss is checked)", async () => {
    signingInAs = "00u-bob-a";
    const browser = new TestBrowser();
    const end = await browser.navigate(
      `${server.url}/auth/login/corp?return_to=/home`,
      (url) => url.origin === server.url && url.pathname === "/home",
    );
    expect(end.url.pathname).toBe("/home");
    const me = await server.client(AuthService, { cookie: browser.cookieHeader() }).getCurrentUser({});
    expect(me.user?.identities[0]?.subject).toBe("00u-bob-a");
  });

  it("refuses a redirect whose iss names another issuer (mix-up defence)", async () => {
    signingInAs = "00u-alice";
    const browser = new TestBrowser();
    const back = await browser.navigate(`${server.url}/auth/login/corp`, isCallback);
    expect(back.url.searchParams.get("iss")).toBe(issuer);
    back.url.searchParams.set("iss", "https://evil.example");
    const res = await browser.fetch(back.url);
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(/^Sign-in failed/);
    expect(browser.cookies.has("devex_session")).toBe(false);
  });
});
