import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { defaultProviderTimeoutMs, providerFetch } from "./http.js";
import type { AuthorizationRequest, CodeExchange, ProviderProfile, RedirectLoginProvider } from "./provider.js";

/** Options for {@link createGitHubProvider}. */
export interface GitHubProviderOptions {
  /** Default `github`. */
  id?: string;
  /** Default `GitHub`. */
  displayName?: string;
  iconUrl?: string;
  clientId: string;
  clientSecret: string;
  /** GitHub's web URL (authorize and token endpoints). Default https://github.com. */
  githubUrl?: string;
  /** GitHub's API URL (user and emails). Default https://api.github.com. */
  githubApiUrl?: string;
  /** Bound on each request to GitHub, in ms. Default 10000. */
  timeoutMs?: number;
}

interface TokenResponse {
  access_token?: string;
  error?: string;
  error_description?: string;
}

interface GitHubUser {
  id?: number;
  login?: string;
  name?: string | null;
  email?: string | null;
  avatar_url?: string;
}

interface GitHubEmail {
  email: string;
  primary: boolean;
  verified: boolean;
}

/** Scopes asked for: the profile, and the email addresses (for a primary email that is not public). */
const scopes = "read:user user:email";

/**
 * GitHub OAuth: the authorization code flow with state and PKCE; the subject is GitHub's
 * numeric user id, never the login name (which the user can change and someone else can take).
 */
export function createGitHubProvider(options: GitHubProviderOptions): RedirectLoginProvider {
  const id = options.id ?? "github";
  const web = (options.githubUrl ?? "https://github.com").replace(/\/+$/, "");
  const api = (options.githubApiUrl ?? "https://api.github.com").replace(/\/+$/, "");
  const timeoutMs = options.timeoutMs ?? defaultProviderTimeoutMs;

  const apiGet = (path: string, token: string, signal: AbortSignal | undefined): Promise<Response> =>
    providerFetch("GitHub", new URL(`${api}${path}`), {
      headers: {
        accept: "application/vnd.github+json",
        authorization: `Bearer ${token}`,
        "user-agent": "devex",
        "x-github-api-version": "2022-11-28",
      },
      timeoutMs,
      signal,
    });

  return {
    id,
    kind: "github",
    displayName: options.displayName ?? "GitHub",
    iconUrl: options.iconUrl ?? "",

    async authorizationUrl(request: AuthorizationRequest) {
      const url = new URL(`${web}/login/oauth/authorize`);
      url.searchParams.set("client_id", options.clientId);
      url.searchParams.set("redirect_uri", request.redirectUri);
      url.searchParams.set("scope", scopes);
      url.searchParams.set("state", request.state);
      url.searchParams.set("code_challenge", createHash("sha256").update(request.codeVerifier).digest("base64url"));
      url.searchParams.set("code_challenge_method", "S256");
      return url;
    },

    async exchange(exchange: CodeExchange): Promise<ProviderProfile> {
      const tokenRes = await providerFetch("GitHub", new URL(`${web}/login/oauth/access_token`), {
        method: "POST",
        headers: { accept: "application/json", "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({
          client_id: options.clientId,
          client_secret: options.clientSecret,
          code: exchange.code,
          redirect_uri: exchange.redirectUri,
          code_verifier: exchange.codeVerifier,
        }),
        timeoutMs,
        signal: exchange.signal,
      });
      if (tokenRes.status >= 500) throw new ConnectError(`GitHub answered ${tokenRes.status}`, Code.Unavailable);
      const token = (await tokenRes.json().catch(() => ({}))) as TokenResponse;
      if (token.error === "incorrect_client_credentials") {
        throw new ConnectError("GitHub login is misconfigured on this server (client credentials)", Code.Internal);
      }
      // GitHub reports a refused code with status 200 and an `error` field.
      if (!tokenRes.ok || token.error || !token.access_token) {
        throw new ConnectError(
          `GitHub refused the authorization code${token.error ? ` (${token.error})` : ""}: start the login again`,
          Code.Unauthenticated,
        );
      }

      const userRes = await apiGet("/user", token.access_token, exchange.signal);
      if (userRes.status >= 500) throw new ConnectError(`GitHub answered ${userRes.status}`, Code.Unavailable);
      if (!userRes.ok) throw new ConnectError("GitHub refused the access token", Code.Unauthenticated);
      const user = (await userRes.json()) as GitHubUser;
      if (typeof user.id !== "number") throw new ConnectError("GitHub sent a user without an id", Code.Unavailable);

      let email = user.email ?? "";
      if (!email) {
        // The primary address is listed only with the user:email scope; without it the user has no email here.
        const emailsRes = await apiGet("/user/emails", token.access_token, exchange.signal);
        if (emailsRes.ok) {
          const emails = (await emailsRes.json()) as GitHubEmail[];
          email = emails.find((e) => e.primary && e.verified)?.email ?? "";
        }
      }
      return {
        subject: String(user.id),
        login: user.login ?? "",
        name: user.name ?? "",
        email,
        avatarUrl: user.avatar_url ?? "",
      };
    },
  };
}
