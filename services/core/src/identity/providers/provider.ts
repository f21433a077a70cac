/** What a provider reports about the person who signed in. */
export interface ProviderProfile {
  /** The provider's stable id for the person (GitHub's numeric id, the OIDC `sub`, the dev username). */
  subject: string;
  /** The login name at the provider; display only. */
  login: string;
  /** Profile name; empty when none. */
  name: string;
  /** A verified email; empty when none. */
  email: string;
  avatarUrl: string;
}

/** The server-side secrets of one authorization request. */
export interface AuthorizationRequest {
  state: string;
  /** OpenID Connect nonce (ignored by plain OAuth providers). */
  nonce: string;
  /** PKCE verifier; the authorization URL carries its S256 challenge. */
  codeVerifier: string;
  redirectUri: string;
}

/** The redirect back from the provider, with the secrets of the request it answers. */
export interface CodeExchange extends AuthorizationRequest {
  code: string;
  /** Every query parameter of the redirect when known (for example `iss`), besides code and state. */
  params?: URLSearchParams;
  signal?: AbortSignal;
}

/** Display data every provider has. */
export interface ProviderInfo {
  /** The configured id (`github`, `oidc`, `dev`, or an operator's choice). */
  id: string;
  displayName: string;
  /** URL of an icon for the login button; empty when none. */
  iconUrl: string;
}

/** A provider that signs people in through a browser redirect (GitHub OAuth, OpenID Connect). */
export interface RedirectLoginProvider extends ProviderInfo {
  kind: "github" | "oidc";
  /** The URL to send the browser to. Throws Unavailable when the provider cannot be reached (discovery). */
  authorizationUrl(request: AuthorizationRequest): Promise<URL>;
  /**
   * Exchanges the code for the person's profile. Throws Unauthenticated when the provider
   * refuses the code, Unavailable when it cannot be reached.
   */
  exchange(exchange: CodeExchange): Promise<ProviderProfile>;
}

/** The dev login: a username, no password (embedded and development mode only). */
export interface DevLoginProvider extends ProviderInfo {
  kind: "dev";
  /** Whether it admits clients other than this machine's loopback. */
  remote: boolean;
}

/** A configured login provider. */
export type LoginProvider = RedirectLoginProvider | DevLoginProvider;
