import type { Logger } from "pino";
import type { ClientAddressOptions } from "../auth/client-address.js";
import type { StateStore } from "../state/store.js";
import { type ApiKeyRepository, createApiKeyRepository } from "./api-keys.js";
import { createLoginStateRepository, type LoginStateRepository } from "./login-states.js";
import type { LoginProvider } from "./providers/provider.js";
import { createRateLimiter, type RateLimiter, type RateLimitOptions } from "./rate-limit.js";
import { createSessionRepository, type SessionRepository } from "./sessions.js";
import { createUserRepository, type UserRepository } from "./users.js";

/** The path under which the browser callback route listens: `<path><provider id>`. */
export const callbackPathPrefix = "/auth/callback/";

/** Options for {@link createIdentity}. */
export interface IdentityOptions {
  store: StateStore;
  /**
   * The URL people reach core at: default OAuth callback URLs (`<publicUrl>/auth/callback/<provider id>`),
   * the origin cookie-authenticated calls must come from, and Secure cookies when it is https.
   */
  publicUrl: string;
  /** How long a browser session lasts after its last use, in ms. */
  sessionTtlMs: number;
  /** The enabled login providers, in display order. Default none (API keys only). */
  providers?: readonly LoginProvider[];
  /** `<provider id>:<subject>` identities made admins when they sign in. */
  adminIdentities?: readonly string[];
  /** Absolute redirect URIs StartLogin accepts besides the default callback URL of each provider. */
  allowedRedirectUris?: readonly string[];
  /** Origins, besides the public URL's, whose pages may make cookie-authenticated calls. */
  allowedOrigins?: readonly string[];
  /** Whether to take client addresses from X-Forwarded-For (see {@link ClientAddressOptions}). Default off. */
  trustProxy?: ClientAddressOptions["trustProxy"];
  /** Limits on failed logins and bad credentials per client address and per API key id. */
  rateLimit?: Partial<RateLimitOptions>;
  /** Active API keys one user may hold. Default 100. */
  maxActiveApiKeysPerUser?: number;
  /** Reads the time; tests move it. */
  now?: () => number;
  logger?: Logger;
}

/**
 * Everything identity: repositories over the state store, the providers, the rate limiter
 * and the settings the interceptor, the AuthService and the callback route share.
 */
export interface Identity {
  store: StateStore;
  publicUrl: URL;
  /** Whether cookies are marked Secure (the public URL is https). */
  secureCookies: boolean;
  sessionTtlMs: number;
  providers: readonly LoginProvider[];
  adminIdentities: ReadonlySet<string>;
  allowedRedirectUris: ReadonlySet<string>;
  /** The public URL's origin and the allowed ones. */
  allowedOrigins: ReadonlySet<string>;
  clientAddress: ClientAddressOptions;
  now: () => number;
  logger?: Logger;
  users: UserRepository;
  sessions: SessionRepository;
  apiKeys: ApiKeyRepository;
  loginStates: LoginStateRepository;
  limiter: RateLimiter;
  /** The enabled provider with this id. */
  provider(id: string): LoginProvider | undefined;
  /** The default redirect URI of a provider: this server's callback route. */
  callbackUrl(providerId: string): string;
}

/** Builds the identity component. Throws naming the option when the public URL or an allowed URI is not absolute. */
export function createIdentity(options: IdentityOptions): Identity {
  const now = options.now ?? Date.now;
  const publicUrl = new URL(options.publicUrl);
  const providers = options.providers ?? [];
  const ids = new Set<string>();
  for (const provider of providers) {
    if (ids.has(provider.id)) throw new Error(`two login providers have the id "${provider.id}"`);
    ids.add(provider.id);
  }
  const base = publicUrl.href.replace(/\/+$/, "");
  return {
    store: options.store,
    publicUrl,
    secureCookies: publicUrl.protocol === "https:",
    sessionTtlMs: options.sessionTtlMs,
    providers,
    adminIdentities: new Set(options.adminIdentities ?? []),
    allowedRedirectUris: new Set((options.allowedRedirectUris ?? []).map((uri) => new URL(uri).href)),
    allowedOrigins: new Set([publicUrl.origin, ...(options.allowedOrigins ?? []).map((o) => new URL(o).origin)]),
    clientAddress: { trustProxy: options.trustProxy ?? false },
    now,
    ...(options.logger ? { logger: options.logger } : {}),
    users: createUserRepository(options.store),
    sessions: createSessionRepository(options.store, { ttlMs: options.sessionTtlMs, now }),
    apiKeys: createApiKeyRepository(options.store, {
      maxActivePerUser: options.maxActiveApiKeysPerUser ?? 100,
      now,
    }),
    loginStates: createLoginStateRepository(options.store, now),
    limiter: createRateLimiter(options.store, options.rateLimit, now),
    provider: (id) => providers.find((p) => p.id === id),
    callbackUrl: (providerId) => `${base}${callbackPathPrefix}${providerId}`,
  };
}
