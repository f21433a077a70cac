import { isIP } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { addressBucket } from "../auth/client-address.js";
import { newId } from "../ids.js";
import type { SessionRecord, UserRecord } from "../model.js";
import { clearCookie, loginCookieName, sessionCookieName, setCookie } from "./cookies.js";
import type { Identity } from "./identity.js";
import { loginStateTtlMs } from "./login-states.js";
import type { RedirectLoginProvider } from "./providers/provider.js";
import { addressSubject } from "./rate-limit.js";
import { hashesEqual, randomSecret, sha256Hex } from "./secrets.js";
import type { IdentityProfile } from "./users.js";

/** Who is signing in, as far as the server can tell. */
export interface LoginClient {
  /** The client address (after trusted proxies). */
  address: string;
  userAgent: string;
}

/** Input of {@link startLogin}. */
export interface StartLoginInput {
  providerId: string;
  /** Empty: the provider's default callback URL on this server. */
  redirectUri?: string;
  /** A path on this server for the callback route to send the browser to afterwards. */
  returnTo?: string;
  client: LoginClient;
}

/** A started login. */
export interface StartedLogin {
  authorizationUrl: string;
  state: string;
  redirectUri: string;
  expiresAtMs: number;
  /** The Set-Cookie value binding the state to this browser. */
  setCookie: string;
}

/** Input of {@link completeLogin}. */
export interface CompleteLoginInput {
  providerId: string;
  code: string;
  state: string;
  /** Must equal the started login's when set. */
  redirectUri?: string;
  /** The redirect's other query parameters (for example `iss`), when known. */
  params?: URLSearchParams;
  /** The value of the login cookie the browser sent. */
  loginCookie?: string;
  /** Link the identity to this user (the caller's valid session) instead of signing in as its owner. */
  linkToUserId?: string;
  client: LoginClient;
  signal?: AbortSignal;
}

/** A completed sign-in. */
export interface SignedIn {
  user: UserRecord;
  created: boolean;
  session: SessionRecord;
  /** Set-Cookie values: the session cookie first (then, after a redirect login, the login cookie cleared). */
  setCookies: string[];
  /** Where the callback route sends the browser. */
  returnTo?: string;
}

const usernamePattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Codes that are the client's doing and count as failed logins (not a provider outage or a server fault). */
const countedCodes = new Set([
  Code.InvalidArgument,
  Code.NotFound,
  Code.FailedPrecondition,
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.AlreadyExists,
]);

/** Runs a login step under the failed-login limit of the client address. */
async function limited<T>(identity: Identity, client: LoginClient, step: () => Promise<T>): Promise<T> {
  const subjects = [addressSubject(addressBucket(client.address))];
  await identity.limiter.check(subjects);
  try {
    return await step();
  } catch (error) {
    if (countedCodes.has(ConnectError.from(error).code)) await identity.limiter.fail(subjects);
    throw error;
  }
}

/** The enabled redirect (GitHub or OIDC) provider with this id; NotFound or FailedPrecondition otherwise. */
function redirectProvider(identity: Identity, providerId: string): RedirectLoginProvider {
  const provider = identity.provider(providerId);
  if (!provider) throw new ConnectError(`no enabled login provider "${providerId}"`, Code.NotFound);
  if (provider.kind === "dev") {
    throw new ConnectError(`"${providerId}" is the dev login: use DevLogin`, Code.FailedPrecondition);
  }
  return provider;
}

/** A path on this server (not `//host`, which browsers read as another site), else `/`. */
export function safeReturnPath(path: string | null | undefined): string {
  return path && /^\/(?![/\\])[^\\\s]*$/.test(path) ? path : "/";
}

/**
 * Begins a browser login: stores the state, PKCE verifier and nonce for 10 minutes under
 * `login:<state>`, and returns the provider's authorization URL and the cookie binding the
 * state to this browser. Rate limited per client address.
 */
export async function startLogin(identity: Identity, input: StartLoginInput): Promise<StartedLogin> {
  return limited(identity, input.client, async () => {
    const provider = redirectProvider(identity, input.providerId);
    const redirectUri = input.redirectUri ? new URL(input.redirectUri).href : identity.callbackUrl(provider.id);
    if (redirectUri !== identity.callbackUrl(provider.id) && !identity.allowedRedirectUris.has(redirectUri)) {
      throw new ConnectError("redirect_uri: not on this server's allow-list", Code.InvalidArgument);
    }
    await identity.limiter.countLoginStart(addressBucket(input.client.address));
    const nowMs = identity.now();
    const binding = randomSecret(32);
    const request = {
      state: newId("login", nowMs),
      nonce: randomSecret(32),
      codeVerifier: randomSecret(32),
      redirectUri,
    };
    const authorizationUrl = await provider.authorizationUrl(request);
    const expiresAtMs = nowMs + loginStateTtlMs;
    await identity.loginStates.create({
      ...request,
      providerId: provider.id,
      bindingHash: sha256Hex(binding),
      ...(input.returnTo ? { returnTo: safeReturnPath(input.returnTo) } : {}),
      createdAtMs: nowMs,
      expiresAtMs,
    });
    return {
      authorizationUrl: authorizationUrl.href,
      state: request.state,
      redirectUri,
      expiresAtMs,
      setCookie: setCookie(loginCookieName, binding, loginStateTtlMs, identity.secureCookies),
    };
  });
}

/**
 * Finishes a browser login: takes the login state exactly once (it must be this provider's,
 * unexpired and bound to this browser's login cookie), exchanges the code, links or creates
 * the user, and creates a session. Failures count towards the client address's limit.
 */
export async function completeLogin(identity: Identity, input: CompleteLoginInput): Promise<SignedIn> {
  return limited(identity, input.client, async () => {
    const provider = redirectProvider(identity, input.providerId);
    const redirectUri = input.redirectUri ? new URL(input.redirectUri).href : undefined;
    const { loginCookie } = input;
    const login = await identity.loginStates.consume(
      input.state,
      (record) =>
        record.providerId === provider.id &&
        loginCookie !== undefined &&
        hashesEqual(sha256Hex(loginCookie), record.bindingHash) &&
        (redirectUri === undefined || redirectUri === record.redirectUri),
    );
    if (!login) {
      throw new ConnectError(
        "this login is unknown, expired, already used, or was started in another browser: start it again",
        Code.FailedPrecondition,
      );
    }
    const profile = await provider.exchange({
      state: login.state,
      nonce: login.nonce,
      codeVerifier: login.codeVerifier,
      redirectUri: login.redirectUri,
      code: input.code,
      ...(input.params ? { params: input.params } : {}),
      ...(input.signal ? { signal: input.signal } : {}),
    });
    const signedIn = await signIn(
      identity,
      { ...profile, providerId: provider.id, providerKind: provider.kind },
      input.client,
      input.linkToUserId,
    );
    return {
      ...signedIn,
      setCookies: [...signedIn.setCookies, clearCookie(loginCookieName, identity.secureCookies)],
      ...(login.returnTo ? { returnTo: login.returnTo } : {}),
    };
  });
}

/** Signs in with the dev login (the username is the subject); FailedPrecondition when it is disabled. */
export async function devLogin(identity: Identity, username: string, client: LoginClient): Promise<SignedIn> {
  return limited(identity, client, async () => {
    const provider = identity.providers.find((p) => p.kind === "dev");
    if (!provider) throw new ConnectError("dev login is disabled on this server", Code.FailedPrecondition);
    if (!provider.remote && !isLoopback(client.address)) {
      throw new ConnectError(
        `dev login admits clients on the server's own machine only, not ${client.address} (start core with --dev-login-remote to allow other addresses)`,
        Code.PermissionDenied,
      );
    }
    if (!usernamePattern.test(username)) {
      throw new ConnectError(
        "username: 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
        Code.InvalidArgument,
      );
    }
    return signIn(
      identity,
      {
        providerId: provider.id,
        providerKind: "dev",
        subject: username,
        login: username,
        name: "",
        email: "",
        avatarUrl: "",
      },
      client,
    );
  });
}

/** Links or creates the user of an identity and opens a session. */
async function signIn(
  identity: Identity,
  profile: IdentityProfile,
  client: LoginClient,
  linkToUserId?: string,
): Promise<SignedIn> {
  const { user, created } = await identity.users.signIn(profile, {
    admin: identity.adminIdentities.has(`${profile.providerId}:${profile.subject}`),
    nowMs: identity.now(),
    ...(linkToUserId === undefined ? {} : { linkToUserId }),
  });
  const session = await identity.sessions.create({
    userId: user.record.id,
    providerId: profile.providerId,
    userAgent: client.userAgent,
    ipAddress: client.address,
  });
  identity.logger?.info(
    { userId: user.record.id, providerId: profile.providerId, sessionId: session.record.id, created },
    "signed in",
  );
  return {
    user: user.record,
    created,
    session: session.record,
    setCookies: [setCookie(sessionCookieName, session.token, identity.sessionTtlMs, identity.secureCookies)],
  };
}

/** Whether a client address is this machine's loopback (127.0.0.0/8, ::1, or 127.x mapped into IPv6). */
function isLoopback(address: string): boolean {
  if (isIP(address) === 0) return false;
  const v4 = address.startsWith("::ffff:") ? address.slice("::ffff:".length) : address;
  return v4.startsWith("127.") || address === "::1";
}
