import { Code } from "@connectrpc/connect";
import { AuthService, LoginProviderKind } from "@devex/gen/devex/core/v1/auth_pb.js";
import { codeOf } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDevProvider } from "../src/identity/providers/dev.js";
import { createGitHubProvider } from "../src/identity/providers/github.js";
import { TestBrowser } from "./support/identity-browser.js";
import { type GitHubAccount, type GitHubStub, startGitHubStub } from "./support/identity-github-stub.js";
import { capture, cookieFrom, type IdentityServer, startIdentityServer } from "./support/identity-harness.js";

const bob: GitHubAccount = {
  id: 583231,
  login: "bob",
  name: "Bob Builder",
  email: null,
  avatar_url: "https://avatars.example/u/583231",
  emails: [
    { email: "bob@old.example", primary: false, verified: true, visibility: null },
    { email: "bob@a.com", primary: true, verified: true, visibility: "private" },
  ],
};

let github: GitHubStub;
let server: IdentityServer;

beforeAll(async () => {
  github = await startGitHubStub(bob);
  server = await startIdentityServer({
    providers: [
      createGitHubProvider({
        clientId: github.clientId,
        clientSecret: github.clientSecret,
        githubUrl: github.url,
        githubApiUrl: github.apiUrl,
      }),
      createDevProvider(),
    ],
    allowedRedirectUris: ["https://app.devex.example/login/done"],
  });
  github.registerRedirectUri(`${server.url}/auth/callback/github`);
});
afterAll(async () => {
  await server?.close();
  await github?.close();
});

const isCallback = (url: URL) => url.pathname.startsWith("/auth/callback/");

/** StartLogin in `browser`, then GitHub's pages: resolves with the redirect back (code and state). */
async function authorize(browser: TestBrowser): Promise<{ code: string; state: string; redirectUri: string }> {
  const seen = capture();
  const started = await server
    .client(AuthService, { cookie: browser.cookieHeader() })
    .startLogin({ providerId: "github" }, seen.options);
  browser.store(seen.headers());
  const back = await browser.navigate(started.authorizationUrl, isCallback);
  return {
    code: back.url.searchParams.get("code") ?? "",
    state: back.url.searchParams.get("state") ?? "",
    redirectUri: started.redirectUri,
  };
}

/** CompleteLogin from `browser`; stores the cookies it sets. */
async function complete(browser: TestBrowser, redirect: { code: string; state: string }) {
  const seen = capture();
  const res = await server
    .client(AuthService, { cookie: browser.cookieHeader() })
    .completeLogin({ providerId: "github", ...redirect }, seen.options);
  browser.store(seen.headers());
  return { res, headers: seen.headers() };
}

describe("GitHub login", () => {
  it("is listed, and StartLogin builds an authorization URL with state and an S256 PKCE challenge", async () => {
    const { providers } = await server.client(AuthService).listLoginProviders({});
    expect(providers.map((p) => p.kind)).toEqual([LoginProviderKind.GITHUB, LoginProviderKind.DEV]);
    const seen = capture();
    const started = await server.client(AuthService).startLogin({ providerId: "github" }, seen.options);
    const url = new URL(started.authorizationUrl);
    expect(`${url.origin}${url.pathname}`).toBe(`${github.url}/login/oauth/authorize`);
    expect(url.searchParams.get("client_id")).toBe(github.clientId);
    expect(url.searchParams.get("state")).toBe(started.state);
    expect(url.searchParams.get("redirect_uri")).toBe(`${server.url}/auth/callback/github`);
    expect(url.searchParams.get("code_challenge_method")).toBe("S256");
    expect(started.redirectUri).toBe(`${server.url}/auth/callback/github`);
    expect(cookieFrom(seen.headers(), "devex_login")?.attributes).toMatch(
      /HttpOnly.*SameSite=Lax|SameSite=Lax.*HttpOnly/,
    );
    expect((await server.store.get(`login:${started.state}`))?.value).toContain('"providerId":"github"');
  });

  it("signs in by GitHub's numeric id, takes the primary verified email, and sets the session cookie", async () => {
    const browser = new TestBrowser();
    const redirect = await authorize(browser);
    const { res, headers } = await complete(browser, redirect);
    expect(res.userCreated).toBe(true);
    expect(res.user?.displayName).toBe("Bob Builder");
    expect(res.user?.email).toBe("bob@a.com");
    expect(res.user?.identities.map((i) => [i.providerId, i.subject, i.login])).toEqual([["github", "583231", "bob"]]);
    expect(github.requests).toContain("GET /api/v3/user/emails");
    expect(cookieFrom(headers, "devex_session")?.attributes).toMatch(/HttpOnly/);
    expect(cookieFrom(headers, "devex_login")?.attributes).toMatch(/Max-Age=0/);
    const me = await server.client(AuthService, { cookie: browser.cookieHeader() }).getCurrentUser({});
    expect(me.user?.id).toBe(res.user?.id);
    expect(me.user?.lastLoginAt).toBeDefined();

    // The same code and state cannot be used twice.
    expect(await codeOf(complete(browser, redirect))).toBe(Code.FailedPrecondition);
  });

  it("matches the GitHub id, not the login name: a rename stays the user, a new owner of the name is another", async () => {
    const first = new TestBrowser();
    const original = (await complete(first, await authorize(first))).res.user?.id;

    github.signedInAs = { ...bob, login: "bob-the-builder" };
    const renamed = new TestBrowser();
    const again = (await complete(renamed, await authorize(renamed))).res;
    expect(again.userCreated).toBe(false);
    expect(again.user?.id).toBe(original);
    expect(again.user?.identities[0]?.login).toBe("bob-the-builder");

    github.signedInAs = { ...bob, id: 9_000_001, name: null, email: "bob@a.com", emails: [] };
    const other = new TestBrowser();
    const impostor = (await complete(other, await authorize(other))).res;
    expect(impostor.userCreated).toBe(true);
    expect(impostor.user?.id).not.toBe(original);
    expect(impostor.user?.displayName).toBe("bob");
    github.signedInAs = bob;
  });

  it("refuses to complete from another browser, and a refused attempt does not burn the login", async () => {
    const victim = new TestBrowser();
    const redirect = await authorize(victim);
    expect(await codeOf(complete(new TestBrowser(), redirect))).toBe(Code.FailedPrecondition);
    expect((await complete(victim, redirect)).res.user?.identities[0]?.subject).toBe("583231");
  });

  it("answers Unauthenticated when GitHub refuses the code, and the state is then used up", async () => {
    const browser = new TestBrowser();
    const redirect = await authorize(browser);
    expect(await codeOf(complete(browser, { ...redirect, code: "not-the-code" }))).toBe(Code.Unauthenticated);
    expect(await codeOf(complete(browser, redirect))).toBe(Code.FailedPrecondition);
  });

  it("refuses unknown providers, the dev provider and redirect URIs off the allow-list", async () => {
    const auth = server.client(AuthService);
    expect(await codeOf(auth.startLogin({ providerId: "gitlab" }))).toBe(Code.NotFound);
    expect(await codeOf(auth.startLogin({ providerId: "dev" }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(auth.startLogin({ providerId: "github", redirectUri: "https://evil.example/cb" }))).toBe(
      Code.InvalidArgument,
    );
    const allowed = await auth.startLogin({
      providerId: "github",
      redirectUri: "https://app.devex.example/login/done",
    });
    expect(new URL(allowed.authorizationUrl).searchParams.get("redirect_uri")).toBe(
      "https://app.devex.example/login/done",
    );
  });

  it("links GitHub to the signed-in user, and refuses a GitHub account linked to someone else (AlreadyExists)", async () => {
    const browser = new TestBrowser();
    const seen = capture();
    const zoe = await server.client(AuthService).devLogin({ username: "zoe" }, seen.options);
    browser.store(seen.headers());
    const zoeCookie = cookieFrom(seen.headers(), "devex_session")?.pair ?? "";

    github.signedInAs = { ...bob, id: 4242, login: "zoe-gh", emails: [] };
    const linked = (await complete(browser, await authorize(browser))).res;
    expect(linked.userCreated).toBe(false);
    expect(linked.user?.id).toBe(zoe.user?.id);
    expect(linked.user?.identities.map((i) => `${i.providerId}:${i.subject}`)).toEqual(["dev:zoe", "github:4242"]);
    // The session the link was made with was replaced by the new one.
    expect(await codeOf(server.client(AuthService, { cookie: zoeCookie }).getCurrentUser({}))).toBe(
      Code.Unauthenticated,
    );
    expect(browser.cookieHeader()).not.toContain(zoeCookie);

    github.signedInAs = bob;
    expect(await codeOf(complete(browser, await authorize(browser)))).toBe(Code.AlreadyExists);
    const me = await server.client(AuthService, { cookie: browser.cookieHeader() }).getCurrentUser({});
    expect(me.user?.identities).toHaveLength(2);
  });
});

describe("the browser routes", () => {
  it("run the whole login without script: /auth/login → GitHub → /auth/callback → the return path, signed in", async () => {
    const browser = new TestBrowser();
    const end = await browser.navigate(
      `${server.url}/auth/login/github?return_to=${encodeURIComponent("/repls?tab=mine")}`,
      (url) => url.origin === server.url && url.pathname === "/repls",
    );
    expect(end.url.search).toBe("?tab=mine");
    expect(browser.cookies.has("devex_session")).toBe(true);
    expect(browser.cookies.has("devex_login")).toBe(false);
    const me = await server.client(AuthService, { cookie: browser.cookieHeader() }).getCurrentUser({});
    expect(me.user?.identities[0]?.subject).toBe("583231");
  });

  it("never redirects off the server after login", async () => {
    const browser = new TestBrowser();
    const end = await browser.navigate(
      `${server.url}/auth/login/github?return_to=${encodeURIComponent("//evil.example/")}`,
      (url) => url.origin === server.url && !isCallback(url) && !url.pathname.startsWith("/auth/login/"),
    );
    expect(end.url.href).toBe(`${server.url}/`);
  });

  it("answers a plain-text 400 for an unknown state or a provider error", async () => {
    const res = await fetch(`${server.url}/auth/callback/github?code=x&state=login_unknown`);
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(await res.text()).toMatch(/start it again/);
    const denied = await fetch(`${server.url}/auth/callback/github?error=access_denied&state=s`);
    expect(denied.status).toBe(400);
    expect(await denied.text()).toContain("access_denied");
    const other = await fetch(`${server.url}/auth/elsewhere`);
    expect(other.status).toBe(404);
    await other.body?.cancel();
  });
});

describe("an unreachable GitHub", () => {
  it("makes CompleteLogin fail with Unavailable", async () => {
    const down = await startIdentityServer({
      providers: [
        createGitHubProvider({
          clientId: "id",
          clientSecret: "secret",
          githubUrl: "http://127.0.0.1:1",
          githubApiUrl: "http://127.0.0.1:1",
          timeoutMs: 2_000,
        }),
      ],
    });
    try {
      const seen = capture();
      const started = await down.client(AuthService).startLogin({ providerId: "github" }, seen.options);
      const cookie = cookieFrom(seen.headers(), "devex_login")?.pair ?? "";
      const code = await codeOf(
        down.client(AuthService, { cookie }).completeLogin({ providerId: "github", code: "c", state: started.state }),
      );
      expect(code).toBe(Code.Unavailable);
    } finally {
      await down.close();
    }
  });
});
