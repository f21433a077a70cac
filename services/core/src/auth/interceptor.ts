import { Code, ConnectError, type Interceptor, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import { clientAddressKey } from "@devex/kit";
import { type ApiKeyCheck, apiKeyIdOfSecret } from "../identity/api-keys.js";
import { clearCookie, readCookie, sessionCookieName, setCookie } from "../identity/cookies.js";
import type { Identity } from "../identity/identity.js";
import { addressSubject } from "../identity/rate-limit.js";
import type { SessionCheck } from "../identity/sessions.js";
import { type Caller, callerKey } from "./caller.js";
import { addressBucket, clientAddressOf } from "./client-address.js";
import { adminServiceTypeName, effectiveScope, requiredScope, scopeAllows } from "./scopes.js";

/** Services served without a credential: gRPC health checks and server reflection. */
export const openServiceTypeNames: ReadonlySet<string> = new Set([
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

/** The AuthService, whose login methods anyone may call. */
export const authServiceTypeName = "devex.core.v1.AuthService";

/** AuthService methods that need no credential (a login page calls them before there is one). */
export const publicAuthMethods: ReadonlySet<string> = new Set([
  "ListLoginProviders",
  "StartLogin",
  "CompleteLogin",
  "DevLogin",
]);

type Presented =
  | { kind: "api_key"; secret: string; keyId: string }
  | { kind: "session"; token: string }
  | { kind: "malformed" };

/** What the request presents: an API key in `Authorization: Bearer`, else the session cookie. */
function presentedCredential(header: Headers): Presented | undefined {
  const authorization = header.get("authorization");
  if (authorization !== null) {
    const secret = /^Bearer +(\S+)$/i.exec(authorization.trim())?.[1];
    if (!secret) return { kind: "malformed" };
    const keyId = apiKeyIdOfSecret(secret);
    return keyId ? { kind: "api_key", secret, keyId } : { kind: "malformed" };
  }
  const token = readCookie(header.get("cookie"), sessionCookieName);
  return token ? { kind: "session", token } : undefined;
}

/**
 * Refuses a cookie-authenticated call a page of another site could have made: it must carry
 * `Connect-Protocol-Version` or a gRPC / gRPC-web content type (either makes browsers ask
 * for CORS approval first), and an `Origin`, when sent, must be an allowed one.
 */
function assertNotCrossSite(identity: Identity, header: Headers): void {
  const contentType = header.get("content-type") ?? "";
  if (!header.has("connect-protocol-version") && !/^application\/grpc/i.test(contentType)) {
    throw new ConnectError(
      "a call authenticated by the session cookie must send the Connect-Protocol-Version header (or use gRPC or gRPC-web)",
      Code.PermissionDenied,
    );
  }
  const origin = header.get("origin");
  if (origin !== null && !identity.allowedOrigins.has(origin)) {
    throw new ConnectError(`pages of ${origin} may not make calls with the session cookie`, Code.PermissionDenied);
  }
}

type Authentication = { ok: true; caller: Caller; setCookie?: string } | { ok: false; error: ConnectError };

const malformedKey = () =>
  new ConnectError(
    'the Authorization header must be "Bearer <API key>" with a Devex API key (dvx_...)',
    Code.Unauthenticated,
  );

const keyFailure: Record<Exclude<Exclude<ApiKeyCheck, { ok: true }>["reason"], "malformed">, string> = {
  unknown: "the API key is not valid",
  revoked: "the API key was revoked",
  expired: "the API key expired",
};

/** Checks a presented credential and builds the caller; never counts failures. */
async function authenticate(identity: Identity, presented: Presented): Promise<Authentication> {
  if (presented.kind === "malformed") return { ok: false, error: malformedKey() };
  if (presented.kind === "api_key") {
    const check = await identity.apiKeys.verify(presented.secret);
    if (!check.ok) {
      return {
        ok: false,
        error:
          check.reason === "malformed"
            ? malformedKey()
            : new ConnectError(keyFailure[check.reason], Code.Unauthenticated),
      };
    }
    const user = await identity.users.get(check.key.record.userId);
    if (!user) return { ok: false, error: new ConnectError(keyFailure.unknown, Code.Unauthenticated) };
    const touched = await identity.apiKeys.touch(check.key);
    const key = touched ?? check.key.record;
    return {
      ok: true,
      caller: {
        user: user.record,
        credential: {
          kind: "api_key",
          apiKeyId: key.id,
          scope: effectiveScope(key.scope, user.record),
          ...(key.expiresAtMs === undefined ? {} : { expiresAtMs: key.expiresAtMs }),
        },
      },
    };
  }
  const sessionFailure = () =>
    new ConnectError("the session is not valid or has ended: sign in again", Code.Unauthenticated, {
      // The browser drops the dead cookie instead of sending it (and failing) on every call.
      "set-cookie": clearCookie(sessionCookieName, identity.secureCookies),
    });
  const check: SessionCheck = await identity.sessions.verify(presented.token);
  if (!check.ok) return { ok: false, error: sessionFailure() };
  const user = await identity.users.get(check.session.record.userId);
  if (!user) return { ok: false, error: sessionFailure() };
  const touched = await identity.sessions.touch(check.session);
  const session = touched ?? check.session.record;
  return {
    ok: true,
    caller: {
      user: user.record,
      credential: {
        kind: "session",
        sessionId: session.id,
        scope: effectiveScope("admin", user.record),
        expiresAtMs: session.expiresAtMs,
      },
    },
    // Sliding expiry: the cookie's Max-Age moves forward with the record (at most once a minute).
    ...(touched
      ? { setCookie: setCookie(sessionCookieName, presented.token, identity.sessionTtlMs, identity.secureCookies) }
      : {}),
  };
}

/**
 * Authentication and authorization of every core RPC, in this order:
 *
 * 1. gRPC health and reflection pass; every other service needs a credential except the
 *    AuthService login methods (CompleteLogin still reads a valid session, to link accounts).
 * 2. The credential: `Authorization: Bearer <API key>`, else the `devex_session` cookie;
 *    none → Unauthenticated. A cookie call must not be cross-site (PermissionDenied).
 * 3. The rate limit of the client address (and of the API key id a secret names): while it
 *    is exceeded every call is refused with ResourceExhausted before the credential is even
 *    looked at — also a correct one, because answering differently for a correct credential
 *    would let a guesser keep guessing and learn which guess was right. The API key id limit
 *    likewise refuses a key whose id someone keeps guessing at, from every address, until the
 *    window ends: the price of bounding guesses spread over many addresses.
 * 4. The credential is checked; a bad one counts as a failure and is refused (Unauthenticated).
 * 5. The scope the method needs (see {@link requiredScope}) → PermissionDenied naming it.
 *
 * Handlers read the caller with `ctx.values.get(callerKey)`.
 */
export function createAuthInterceptor(identity: Identity): Interceptor {
  return (next) => async (req: UnaryRequest | StreamRequest) => {
    const serviceName = req.service.typeName;
    if (openServiceTypeNames.has(serviceName)) return next(req);
    const presented = presentedCredential(req.header);

    if (serviceName === authServiceTypeName && publicAuthMethods.has(req.method.name)) {
      // Only CompleteLogin uses a caller (account linking), and only a fully valid session.
      if (req.method.name === "CompleteLogin" && presented?.kind === "session") {
        try {
          assertNotCrossSite(identity, req.header);
          const result = await authenticate(identity, presented);
          if (result.ok) req.contextValues.set(callerKey, result.caller);
        } catch {
          // Not usable for linking: the login goes on without it.
        }
      }
      return next(req);
    }

    if (!presented) {
      throw new ConnectError(
        "this call needs a credential: an API key (Authorization: Bearer dvx_...) or a session cookie",
        Code.Unauthenticated,
      );
    }
    if (presented.kind === "session") assertNotCrossSite(identity, req.header);

    const address = clientAddressOf(
      (name) => req.header.get(name),
      identity.clientAddress,
      req.contextValues.get(clientAddressKey),
    );
    // Failures count per client address only. A count per API key id would let anyone who
    // knows a key's id (it is in the key, and in logs) lock its owner out from anywhere; guessing
    // a 256-bit secret is hopeless however many addresses try, so per address is enough.
    const subjects = [addressSubject(addressBucket(address))];
    await identity.limiter.check(subjects);

    const result = await authenticate(identity, presented);
    if (!result.ok) {
      await identity.limiter.fail(subjects);
      throw result.error;
    }
    const { caller } = result;
    const required = requiredScope(req.method);
    if (!scopeAllows(caller.credential.scope, required)) {
      throw new ConnectError(
        serviceName === adminServiceTypeName
          ? `${req.method.name} needs scope admin, held only by admin users; this credential has scope ${caller.credential.scope}`
          : `${req.method.name} needs scope ${required}; this credential has scope ${caller.credential.scope}`,
        Code.PermissionDenied,
      );
    }
    req.contextValues.set(callerKey, caller);
    const res = await next(req);
    if (result.setCookie) res.header.append("set-cookie", result.setCookie);
    return res;
  };
}
