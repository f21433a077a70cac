import { Code, ConnectError } from "@connectrpc/connect";
import * as client from "openid-client";
import { defaultProviderTimeoutMs } from "./http.js";
import type { AuthorizationRequest, CodeExchange, ProviderProfile, RedirectLoginProvider } from "./provider.js";

/** Options for {@link createOidcProvider}. */
export interface OidcProviderOptions {
  /** Default `oidc`. */
  id?: string;
  /** Default `Single sign-on`. */
  displayName?: string;
  iconUrl?: string;
  /** The issuer URL; its discovery document is read on first use. */
  issuer: string;
  clientId: string;
  /** Empty or absent for a public client (PKCE only). */
  clientSecret?: string;
  /** How the client authenticates at the token endpoint. Default `client_secret_basic` with a secret, `none` without. */
  tokenEndpointAuthMethod?: "client_secret_basic" | "client_secret_post" | "none";
  /** Default `openid profile email`. */
  scope?: string;
  /** Bound on each request to the provider, in ms. Default 10000. */
  timeoutMs?: number;
}

const loopbackHosts = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * Any OpenID Connect provider, through `openid-client`: discovery from the issuer, the
 * authorization code flow with PKCE, state and nonce. The subject is the ID token's `sub`.
 * Plain http is accepted only for an issuer on the loopback interface (tests, local IdPs).
 */
export function createOidcProvider(options: OidcProviderOptions): RedirectLoginProvider {
  const id = options.id ?? "oidc";
  const issuer = new URL(options.issuer);
  const timeoutMs = options.timeoutMs ?? defaultProviderTimeoutMs;
  const insecure = issuer.protocol === "http:" && loopbackHosts.has(issuer.hostname);
  if (issuer.protocol !== "https:" && !insecure) {
    throw new Error(`OIDC issuer ${options.issuer} must be an https URL (http only on localhost)`);
  }
  const method = options.tokenEndpointAuthMethod ?? (options.clientSecret ? "client_secret_basic" : "none");
  const clientAuth =
    method === "none"
      ? client.None()
      : method === "client_secret_post"
        ? client.ClientSecretPost(options.clientSecret)
        : client.ClientSecretBasic(options.clientSecret);

  let configuration: Promise<client.Configuration> | undefined;
  const configure = (): Promise<client.Configuration> => {
    configuration ??= client
      .discovery(issuer, options.clientId, options.clientSecret || undefined, clientAuth, {
        execute: insecure ? [client.allowInsecureRequests] : [],
        timeout: Math.ceil(timeoutMs / 1000),
      })
      .catch((error: unknown) => {
        // Not cached: the next login tries the discovery again.
        configuration = undefined;
        throw new ConnectError(
          `${id} (${options.issuer}) cannot be reached`,
          Code.Unavailable,
          undefined,
          undefined,
          error,
        );
      });
    return configuration;
  };

  return {
    id,
    kind: "oidc",
    displayName: options.displayName ?? "Single sign-on",
    iconUrl: options.iconUrl ?? "",

    async authorizationUrl(request: AuthorizationRequest) {
      const config = await configure();
      return client.buildAuthorizationUrl(config, {
        redirect_uri: request.redirectUri,
        scope: options.scope ?? "openid profile email",
        state: request.state,
        nonce: request.nonce,
        code_challenge: await client.calculatePKCECodeChallenge(request.codeVerifier),
        code_challenge_method: "S256",
      });
    },

    async exchange(exchange: CodeExchange): Promise<ProviderProfile> {
      const config = await configure();
      const metadata = config.serverMetadata();
      const callback = new URL(exchange.redirectUri);
      callback.search = "";
      callback.hash = "";
      for (const [name, value] of exchange.params ?? []) callback.searchParams.set(name, value);
      callback.searchParams.set("code", exchange.code);
      callback.searchParams.set("state", exchange.state);
      // RFC 9207 mix-up defence: the login state already binds this code to this provider, so
      // a redirect that did not carry `iss` (the CompleteLogin call has no field for it) may
      // name the issuer it was meant for; one that carried a different `iss` still fails.
      if (metadata.authorization_response_iss_parameter_supported && !callback.searchParams.has("iss")) {
        callback.searchParams.set("iss", metadata.issuer);
      }
      try {
        const tokens = await client.authorizationCodeGrant(config, callback, {
          pkceCodeVerifier: exchange.codeVerifier,
          expectedState: exchange.state,
          expectedNonce: exchange.nonce,
          idTokenExpected: true,
        });
        const claims = tokens.claims();
        if (!claims) throw new ConnectError(`${id} sent no ID token`, Code.Unauthenticated);
        let profile: Record<string, unknown> = { ...claims };
        // The ID token may carry only `sub`; the userinfo endpoint has the profile.
        if (metadata.userinfo_endpoint) {
          const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub).catch(() => undefined);
          if (info) profile = { ...info, ...claims };
        }
        const text = (name: string) => (typeof profile[name] === "string" ? (profile[name] as string) : "");
        return {
          subject: claims.sub,
          login: text("preferred_username") || text("email") || claims.sub,
          name: text("name"),
          email: profile.email_verified === false ? "" : text("email"),
          avatarUrl: text("picture"),
        };
      } catch (error) {
        throw asConnectError(id, error);
      }
    },
  };
}

/** Unavailable when the provider could not be reached or failed; Unauthenticated when it refused. */
function asConnectError(providerId: string, error: unknown): ConnectError {
  if (error instanceof ConnectError) return error;
  if (error instanceof client.ResponseBodyError) {
    return error.status >= 500
      ? new ConnectError(`${providerId} failed (${error.status})`, Code.Unavailable, undefined, undefined, error)
      : new ConnectError(
          `${providerId} refused the authorization code (${error.error}): start the login again`,
          Code.Unauthenticated,
          undefined,
          undefined,
          error,
        );
  }
  const name = error instanceof Error ? error.name : "";
  const unreachable =
    error instanceof TypeError ||
    name === "TimeoutError" ||
    name === "AbortError" ||
    (error instanceof client.ClientError && error.code === "OAUTH_RESPONSE_IS_NOT_CONFORM");
  if (unreachable) {
    return new ConnectError(`${providerId} cannot be reached`, Code.Unavailable, undefined, undefined, error);
  }
  return new ConnectError(
    `${providerId} sign-in failed: ${error instanceof Error ? error.message : String(error)}`,
    Code.Unauthenticated,
    undefined,
    undefined,
    error,
  );
}
