import type { StateStore } from "../state/store.js";

/** The key of a login in progress, by its `state`. */
export const loginStateKey = (state: string): string => `login:${state}`;

/** How long a started login may be completed. */
export const loginStateTtlMs = 10 * 60_000;

/** A login between StartLogin and CompleteLogin; kept server side, never sent to the browser. */
export interface LoginStateRecord {
  state: string;
  providerId: string;
  /** The PKCE code verifier (the provider saw only its S256 challenge). */
  codeVerifier: string;
  /** The OpenID Connect nonce the ID token must carry. */
  nonce: string;
  /** Where the provider sends the browser back; the token request must name it again. */
  redirectUri: string;
  /** SHA-256 of the login cookie set in the browser that started the login. */
  bindingHash: string;
  /** A path on this server to send the browser to once the callback route has signed it in. */
  returnTo?: string;
  createdAtMs: number;
  expiresAtMs: number;
}

/** Logins in progress, each usable once. */
export interface LoginStateRepository {
  create(record: LoginStateRecord): Promise<void>;
  /**
   * Takes a login out of the store exactly once: the record when it exists, is unexpired and
   * `accept` approves it (it is then deleted with a version check, so of two concurrent
   * completions only one gets it); undefined otherwise (a refused record is left in place, so
   * a forged attempt cannot cancel someone else's login).
   */
  consume(state: string, accept: (record: LoginStateRecord) => boolean): Promise<LoginStateRecord | undefined>;
}

/** A {@link LoginStateRepository} over the state store. */
export function createLoginStateRepository(store: StateStore, now: () => number): LoginStateRepository {
  return {
    async create(record) {
      const result = await store.commit({
        checks: [{ key: loginStateKey(record.state), version: 0 }],
        puts: [{ key: loginStateKey(record.state), value: JSON.stringify(record), ttlMs: loginStateTtlMs }],
      });
      if (!result.ok) throw new Error("login state collided");
    },
    async consume(state, accept) {
      const stored = await store.get(loginStateKey(state));
      if (!stored) return undefined;
      const record = JSON.parse(stored.value) as LoginStateRecord;
      if (record.expiresAtMs <= now() || !accept(record)) return undefined;
      const result = await store.commit({
        checks: [{ key: loginStateKey(state), version: stored.version }],
        deletes: [loginStateKey(state)],
      });
      return result.ok ? record : undefined;
    },
  };
}
