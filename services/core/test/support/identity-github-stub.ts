import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** A GitHub account the stub signs the browser in as. */
export interface GitHubAccount {
  id: number;
  login: string;
  name: string | null;
  /** The public email; null when the user keeps it private. */
  email: string | null;
  avatar_url: string;
  emails: { email: string; primary: boolean; verified: boolean; visibility: string | null }[];
}

/** A strict local stand-in for GitHub's OAuth endpoints and the two API calls login needs. */
export interface GitHubStub {
  /** Web URL (authorize, access_token). */
  url: string;
  /** API URL, GitHub Enterprise style (`<url>/api/v3`). */
  apiUrl: string;
  clientId: string;
  clientSecret: string;
  /** The account the "browser" is signed in to at GitHub. */
  signedInAs: GitHubAccount;
  /** Registers the OAuth app's callback URL. */
  registerRedirectUri(uri: string): void;
  /** Every request, as `METHOD path`. */
  requests: string[];
  close(): Promise<void>;
}

interface IssuedCode {
  account: GitHubAccount;
  redirectUri: string;
  challenge: string;
  used: boolean;
  expiresAtMs: number;
}

const docs = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors";

function json(res: ServerResponse, status: number, body: unknown): void {
  res.statusCode = status;
  res.setHeader("content-type", "application/json; charset=utf-8");
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** Starts the stub on a free port. Anything it does not expect is refused in GitHub's error shapes. */
export async function startGitHubStub(account: GitHubAccount): Promise<GitHubStub> {
  const clientId = "Iv1.devextest";
  const clientSecret = randomBytes(20).toString("hex");
  const redirectUris = new Set<string>();
  const codes = new Map<string, IssuedCode>();
  const tokens = new Map<string, GitHubAccount>();
  const requests: string[] = [];

  const tokenError = (res: ServerResponse, error: string, description: string) =>
    json(res, 200, { error, error_description: description, error_uri: `${docs}#${error.replaceAll("_", "-")}` });

  const authenticated = (req: IncomingMessage, res: ServerResponse): GitHubAccount | undefined => {
    const token = /^(?:Bearer|token) (\S+)$/.exec(req.headers.authorization ?? "")?.[1];
    const account = token ? tokens.get(token) : undefined;
    if (!account)
      json(res, 401, { message: "Bad credentials", documentation_url: "https://docs.github.com/rest", status: "401" });
    return account;
  };

  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://stub");
    requests.push(`${req.method} ${url.pathname}`);
    if (req.method === "GET" && url.pathname === "/login/oauth/authorize") {
      const q = url.searchParams;
      if (q.get("client_id") !== clientId) return json(res, 404, { message: "Not Found" });
      const redirectUri = q.get("redirect_uri") ?? "";
      if (!redirectUris.has(redirectUri)) {
        res.statusCode = 400;
        return res.end("The redirect_uri is not associated with this application.");
      }
      if (q.get("code_challenge_method") !== "S256" || !q.get("code_challenge") || !q.get("state")) {
        res.statusCode = 400;
        return res.end("state and an S256 code_challenge are required by this stub");
      }
      const code = randomBytes(10).toString("hex");
      codes.set(code, {
        account: stub.signedInAs,
        redirectUri,
        challenge: q.get("code_challenge") ?? "",
        used: false,
        expiresAtMs: Date.now() + 600_000,
      });
      const back = new URL(redirectUri);
      back.searchParams.set("code", code);
      back.searchParams.set("state", q.get("state") ?? "");
      res.statusCode = 302;
      res.setHeader("location", back.href);
      return res.end();
    }
    if (req.method === "POST" && url.pathname === "/login/oauth/access_token") {
      if (!(req.headers.accept ?? "").includes("application/json")) {
        res.statusCode = 200;
        res.setHeader("content-type", "application/x-www-form-urlencoded");
        return res.end("error=unsupported_accept");
      }
      const form = new URLSearchParams(await readBody(req));
      if (form.get("client_id") !== clientId || form.get("client_secret") !== clientSecret) {
        return tokenError(
          res,
          "incorrect_client_credentials",
          "The client_id and/or client_secret passed are incorrect.",
        );
      }
      const issued = codes.get(form.get("code") ?? "");
      if (!issued || issued.used || issued.expiresAtMs < Date.now()) {
        return tokenError(res, "bad_verification_code", "The code passed is incorrect or expired.");
      }
      if (form.get("redirect_uri") !== issued.redirectUri) {
        return tokenError(
          res,
          "redirect_uri_mismatch",
          "The redirect_uri MUST match the registered callback URL for this application.",
        );
      }
      const verifier = form.get("code_verifier") ?? "";
      if (createHash("sha256").update(verifier).digest("base64url") !== issued.challenge) {
        return tokenError(res, "bad_verification_code", "The code passed is incorrect or expired.");
      }
      issued.used = true;
      const token = `gho_${randomBytes(18).toString("base64url")}`;
      tokens.set(token, issued.account);
      return json(res, 200, { access_token: token, token_type: "bearer", scope: "read:user,user:email" });
    }
    if (req.method === "GET" && url.pathname === "/api/v3/user") {
      const account = authenticated(req, res);
      if (!account) return;
      const { emails: _, ...user } = account;
      return json(res, 200, user);
    }
    if (req.method === "GET" && url.pathname === "/api/v3/user/emails") {
      const account = authenticated(req, res);
      if (!account) return;
      return json(res, 200, account.emails);
    }
    return json(res, 404, { message: "Not Found", documentation_url: "https://docs.github.com/rest" });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const stub: GitHubStub = {
    url,
    apiUrl: `${url}/api/v3`,
    clientId,
    clientSecret,
    signedInAs: account,
    registerRedirectUri: (uri) => redirectUris.add(uri),
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return stub;
}
