import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { AuthService } from "@devex/gen/devex/core/v1/auth_pb.js";
import { clientAddressKey } from "@devex/kit";
import { callerKey, requireCaller } from "../auth/caller.js";
import { clientAddressOf } from "../auth/client-address.js";
import { scopeAllows } from "../auth/scopes.js";
import type { SessionRecord } from "../model.js";
import { decodePageToken, encodePageToken } from "../paging.js";
import {
  apiKeyToMessage,
  credentialToMessage,
  providerToMessage,
  scopeFromMessage,
  sessionToMessage,
  userToMessage,
} from "./convert.js";
import { clearCookie, loginCookieName, readCookie, sessionCookieName } from "./cookies.js";
import type { Identity } from "./identity.js";
import { completeLogin, devLogin, type LoginClient, type SignedIn, startLogin } from "./login.js";

/** Page size when a list request says 0. */
const defaultPageSize = 50;
/** The longest lifetime CreateApiKey accepts (730 days). */
const maxKeyLifetimeMs = 730 * 86_400_000;

/** The client of a call: its address (after trusted proxies) and User-Agent. */
function loginClient(identity: Identity, ctx: HandlerContext): LoginClient {
  return {
    address: clientAddressOf(
      (name) => ctx.requestHeader.get(name),
      identity.clientAddress,
      ctx.values.get(clientAddressKey),
    ),
    userAgent: ctx.requestHeader.get("user-agent") ?? "",
  };
}

/** Sessions in list order (most recently used first, then newest id) after the cursor `<lastUsedAtMs>:<id>`. */
function sessionsAfter(sessions: SessionRecord[], cursor: string | undefined): SessionRecord[] {
  if (cursor === undefined) return sessions;
  const match = /^(\d+):(ses_[0-9a-z]{26})$/.exec(cursor);
  if (!match?.[2]) throw new ConnectError("page_token: not a token this server issued", Code.InvalidArgument);
  const ms = Number(match[1]);
  const id = match[2];
  return sessions.filter((s) => s.lastUsedAtMs < ms || (s.lastUsedAtMs === ms && s.id < id));
}

/**
 * The AuthService: who am I, login providers, browser sessions and API keys. Register it with
 * `router.service(AuthService, createAuthService(identity))`, behind the interceptor of
 * `createAuthInterceptor(identity)`, which sets the caller and refuses unauthenticated and
 * under-scoped calls before a handler runs.
 */
export function createAuthService(identity: Identity): ServiceImpl<typeof AuthService> {
  const signedInResponse = (signedIn: SignedIn, ctx: HandlerContext) => {
    for (const cookie of signedIn.setCookies) ctx.responseHeader.append("set-cookie", cookie);
    return {
      user: userToMessage(signedIn.user),
      session: sessionToMessage(signedIn.session, signedIn.session.id),
      userCreated: signedIn.created,
    };
  };

  return {
    async getCurrentUser(_req, ctx) {
      const caller = requireCaller(ctx.values);
      return { user: userToMessage(caller.user), credential: credentialToMessage(caller.credential) };
    },

    async listLoginProviders() {
      return { providers: identity.providers.map(providerToMessage) };
    },

    async startLogin(req, ctx) {
      const started = await startLogin(identity, {
        providerId: req.providerId,
        redirectUri: req.redirectUri,
        client: loginClient(identity, ctx),
      });
      ctx.responseHeader.append("set-cookie", started.setCookie);
      return {
        authorizationUrl: started.authorizationUrl,
        state: started.state,
        redirectUri: started.redirectUri,
        expiresAt: timestampFromMs(started.expiresAtMs),
      };
    },

    async completeLogin(req, ctx) {
      // A call carrying a valid session links the new identity to that user (adding a provider).
      const caller = ctx.values.get(callerKey);
      const current = caller?.credential.kind === "session" ? caller.credential : undefined;
      const signedIn = await completeLogin(identity, {
        providerId: req.providerId,
        code: req.code,
        state: req.state,
        redirectUri: req.redirectUri,
        loginCookie: readCookie(ctx.requestHeader.get("cookie"), loginCookieName),
        ...(current && caller ? { linkToUserId: caller.user.id } : {}),
        client: loginClient(identity, ctx),
        signal: ctx.signal,
      });
      // The new session's cookie replaces the old one in this browser: end the old session.
      if (current && caller) await identity.sessions.delete(caller.user.id, current.sessionId);
      return signedInResponse(signedIn, ctx);
    },

    async devLogin(req, ctx) {
      return signedInResponse(await devLogin(identity, req.username, loginClient(identity, ctx)), ctx);
    },

    async logout(_req, ctx) {
      const { user, credential } = requireCaller(ctx.values);
      if (credential.kind !== "session") {
        throw new ConnectError(
          "this call was made with an API key, which has no session: use RevokeApiKey",
          Code.FailedPrecondition,
        );
      }
      await identity.sessions.delete(user.id, credential.sessionId);
      ctx.responseHeader.append("set-cookie", clearCookie(sessionCookieName, identity.secureCookies));
      return {};
    },

    async listSessions(req, ctx) {
      const { user, credential } = requireCaller(ctx.values);
      const currentId = credential.kind === "session" ? credential.sessionId : undefined;
      const size = req.pageSize || defaultPageSize;
      const rest = sessionsAfter(await identity.sessions.listForUser(user.id), decodePageToken(req.pageToken));
      const page = rest.slice(0, size);
      const last = page.at(-1);
      return {
        sessions: page.map((s) => sessionToMessage(s, currentId)),
        nextPageToken: rest.length > size && last ? encodePageToken(`${last.lastUsedAtMs}:${last.id}`) : "",
      };
    },

    async revokeSession(req, ctx) {
      const { user, credential } = requireCaller(ctx.values);
      // Another user's session is NotFound too, so the answer does not tell that it exists.
      if (!(await identity.sessions.delete(user.id, req.sessionId))) {
        throw new ConnectError(`you have no active session ${req.sessionId}`, Code.NotFound);
      }
      if (credential.kind === "session" && credential.sessionId === req.sessionId) {
        ctx.responseHeader.append("set-cookie", clearCookie(sessionCookieName, identity.secureCookies));
      }
      return {};
    },

    async createApiKey(req, ctx) {
      const { user, credential } = requireCaller(ctx.values);
      const scope = scopeFromMessage(req.scope);
      if (!scope) throw new ConnectError("scope: required", Code.InvalidArgument);
      if (scope === "admin" && !user.admin) {
        throw new ConnectError("only admin users may create keys with scope admin", Code.PermissionDenied);
      }
      if (!scopeAllows(credential.scope, scope)) {
        throw new ConnectError(
          `a key with scope ${scope} needs a credential with at least that scope; this one has ${credential.scope}`,
          Code.PermissionDenied,
        );
      }
      const nowMs = identity.now();
      const expiresAtMs = req.expiresAt ? timestampDate(req.expiresAt).getTime() : undefined;
      if (expiresAtMs !== undefined && (expiresAtMs <= nowMs || expiresAtMs > nowMs + maxKeyLifetimeMs)) {
        throw new ConnectError("expires_at: must be in the future and at most 730 days away", Code.InvalidArgument);
      }
      const created = await identity.apiKeys.create({
        userId: user.id,
        name: req.name,
        scope,
        ...(expiresAtMs === undefined ? {} : { expiresAtMs }),
      });
      return { apiKey: apiKeyToMessage(created.record, nowMs), secret: created.secret };
    },

    async listApiKeys(req, ctx) {
      const { user } = requireCaller(ctx.values);
      const after = decodePageToken(req.pageToken);
      const page = await identity.apiKeys.list(user.id, {
        limit: req.pageSize || defaultPageSize,
        includeRevoked: req.includeRevoked,
        ...(after === undefined ? {} : { after }),
      });
      const nowMs = identity.now();
      return {
        apiKeys: page.keys.map((key) => apiKeyToMessage(key, nowMs)),
        nextPageToken: page.nextAfter === undefined ? "" : encodePageToken(page.nextAfter),
      };
    },

    async revokeApiKey(req, ctx) {
      const { user } = requireCaller(ctx.values);
      const revoked = await identity.apiKeys.revoke(user.id, req.apiKeyId);
      if (!revoked) throw new ConnectError(`you have no API key ${req.apiKeyId}`, Code.NotFound);
      return { apiKey: apiKeyToMessage(revoked, identity.now()) };
    },
  };
}
