import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type ApiKey,
  ApiKeySchema,
  ApiKeyState,
  type Credential,
  CredentialKind,
  CredentialSchema,
  LinkedIdentitySchema,
  LoginProviderKind,
  type LoginProvider as LoginProviderMessage,
  LoginProviderSchema,
  Scope as ScopeMessage,
  type Session,
  SessionSchema,
  type User,
  UserSchema,
} from "@devex/gen/devex/core/v1/auth_pb.js";
import type { CallerCredential } from "../auth/caller.js";
import type { ApiKeyRecord, ProviderKind, Scope, SessionRecord, UserRecord } from "../model.js";
import { apiKeyState } from "./api-keys.js";
import type { LoginProvider } from "./providers/provider.js";

const scopes: Record<Scope, ScopeMessage> = {
  read_only: ScopeMessage.READ_ONLY,
  full: ScopeMessage.FULL,
  admin: ScopeMessage.ADMIN,
};

const providerKinds: Record<ProviderKind, LoginProviderKind> = {
  github: LoginProviderKind.GITHUB,
  oidc: LoginProviderKind.OIDC,
  dev: LoginProviderKind.DEV,
};

/** The API enum of a scope. */
export function scopeToMessage(scope: Scope): ScopeMessage {
  return scopes[scope];
}

/** The scope of an API enum value; undefined for SCOPE_UNSPECIFIED and unknown values. */
export function scopeFromMessage(scope: ScopeMessage): Scope | undefined {
  return (Object.keys(scopes) as Scope[]).find((name) => scopes[name] === scope);
}

/** A user as the API shows it. */
export function userToMessage(user: UserRecord): User {
  return create(UserSchema, {
    id: user.id,
    displayName: user.displayName,
    email: user.email,
    avatarUrl: user.avatarUrl,
    identities: user.identities.map((identity) =>
      create(LinkedIdentitySchema, {
        providerKind: providerKinds[identity.providerKind],
        providerId: identity.providerId,
        subject: identity.subject,
        login: identity.login,
        email: identity.email,
        linkedAt: timestampFromMs(identity.linkedAtMs),
      }),
    ),
    createdAt: timestampFromMs(user.createdAtMs),
    admin: user.admin,
    ...(user.lastLoginAtMs === undefined ? {} : { lastLoginAt: timestampFromMs(user.lastLoginAtMs) }),
  });
}

/** A session as the API shows it; `current` when it is the one the call was made with. */
export function sessionToMessage(session: SessionRecord, currentSessionId?: string): Session {
  return create(SessionSchema, {
    id: session.id,
    providerId: session.providerId,
    createdAt: timestampFromMs(session.createdAtMs),
    lastUsedAt: timestampFromMs(session.lastUsedAtMs),
    expiresAt: timestampFromMs(session.expiresAtMs),
    userAgent: session.userAgent,
    ipAddress: session.ipAddress,
    current: session.id === currentSessionId,
  });
}

const keyStates = { active: ApiKeyState.ACTIVE, expired: ApiKeyState.EXPIRED, revoked: ApiKeyState.REVOKED };

/** An API key's metadata as the API shows it (never the secret or its hash). */
export function apiKeyToMessage(key: ApiKeyRecord, nowMs: number): ApiKey {
  return create(ApiKeySchema, {
    id: key.id,
    name: key.name,
    prefix: key.prefix,
    scope: scopes[key.scope],
    state: keyStates[apiKeyState(key, nowMs)],
    createdAt: timestampFromMs(key.createdAtMs),
    ...(key.lastUsedAtMs === undefined ? {} : { lastUsedAt: timestampFromMs(key.lastUsedAtMs) }),
    ...(key.expiresAtMs === undefined ? {} : { expiresAt: timestampFromMs(key.expiresAtMs) }),
    ...(key.revokedAtMs === undefined ? {} : { revokedAt: timestampFromMs(key.revokedAtMs) }),
  });
}

/** The credential of a call as the API shows it. */
export function credentialToMessage(credential: CallerCredential): Credential {
  return create(CredentialSchema, {
    kind: credential.kind === "session" ? CredentialKind.SESSION : CredentialKind.API_KEY,
    scope: scopes[credential.scope],
    ...(credential.kind === "session" ? { sessionId: credential.sessionId } : { apiKeyId: credential.apiKeyId }),
    ...(credential.expiresAtMs === undefined ? {} : { expiresAt: timestampFromMs(credential.expiresAtMs) }),
  });
}

/** A login provider as a login page shows it. */
export function providerToMessage(provider: LoginProvider): LoginProviderMessage {
  return create(LoginProviderSchema, {
    id: provider.id,
    kind: providerKinds[provider.kind],
    displayName: provider.displayName,
    iconUrl: provider.iconUrl,
  });
}
