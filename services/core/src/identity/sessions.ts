import { newId } from "../ids.js";
import type { SessionRecord, Versioned } from "../model.js";
import type { StateStore } from "../state/store.js";
import { hashesEqual, randomSecret, sha256Hex } from "./secrets.js";

/** The key of a session record; it expires with the session. */
export const sessionKey = (sessionId: string): string => `session:${sessionId}`;
/** The index of a user's sessions; members are session ids. */
export const userSessionsIndex = (userId: string): string => `user-sessions:${userId}`;

/** The last use of a session or an API key is written at most this often, not on every call. */
export const lastUseWriteIntervalMs = 60_000;

const tokenPattern = /^(ses_[0-9a-z]{26})\.([A-Za-z0-9_-]{43})$/;
/** At most this many sessions of one user are looked at when listing. */
const maxListed = 1000;

/** What a new session is created from. */
export interface NewSession {
  userId: string;
  providerId: string;
  userAgent: string;
  ipAddress: string;
}

/** A new session and the cookie value that authenticates it (shown to the browser only). */
export interface CreatedSession {
  record: SessionRecord;
  /** `<session id>.<secret>`, the value of the session cookie. */
  token: string;
}

/** The outcome of {@link SessionRepository.verify}. */
export type SessionCheck =
  | { ok: true; session: Versioned<SessionRecord> }
  | { ok: false; reason: "malformed" | "unknown" | "expired" };

/** Options for {@link createSessionRepository}. */
export interface SessionRepositoryOptions {
  /** How long a session lasts after its last use, in ms (sliding expiry). */
  ttlMs: number;
  now: () => number;
}

/**
 * Browser sessions. The cookie carries the session id and a 32-byte random secret; only the
 * secret's SHA-256 is stored, so a copy of the store does not yield working cookies.
 */
export interface SessionRepository {
  create(input: NewSession): Promise<CreatedSession>;
  /** Checks a cookie value: the session must exist, be unexpired, and its secret must match. */
  verify(token: string): Promise<SessionCheck>;
  /**
   * Records a use: when the last recorded use is older than a minute, moves `lastUsedAtMs` and
   * the expiry forward and returns the new record; otherwise (or when another call won the
   * race) returns undefined and writes nothing.
   */
  touch(session: Versioned<SessionRecord>): Promise<SessionRecord | undefined>;
  get(sessionId: string): Promise<Versioned<SessionRecord> | undefined>;
  /** A user's live sessions, most recently used first (ties: newest id first). */
  listForUser(userId: string): Promise<SessionRecord[]>;
  /** Ends a session of this user; false when the user has no such session. */
  delete(userId: string, sessionId: string): Promise<boolean>;
}

/** A {@link SessionRepository} over the state store. */
export function createSessionRepository(store: StateStore, options: SessionRepositoryOptions): SessionRepository {
  const { ttlMs, now } = options;

  const get = async (sessionId: string): Promise<Versioned<SessionRecord> | undefined> => {
    const stored = await store.get(sessionKey(sessionId));
    if (!stored) return undefined;
    const record = JSON.parse(stored.value) as SessionRecord;
    // The store's TTL removes it too; this covers stores whose expiry is coarser than ours.
    return record.expiresAtMs > now() ? { record, version: stored.version } : undefined;
  };

  const remove = async (userId: string, sessionId: string): Promise<boolean> => {
    for (;;) {
      const current = await get(sessionId);
      if (!current || current.record.userId !== userId) return false;
      const result = await store.commit({
        checks: [{ key: sessionKey(sessionId), version: current.version }],
        deletes: [sessionKey(sessionId)],
        indexRemoves: [{ index: userSessionsIndex(userId), member: sessionId }],
      });
      // A conflict means a concurrent touch or delete: look again.
      if (result.ok) return true;
    }
  };

  return {
    async create(input) {
      const nowMs = now();
      const secret = randomSecret(32);
      const record: SessionRecord = {
        id: newId("ses", nowMs),
        userId: input.userId,
        providerId: input.providerId,
        secretHash: sha256Hex(secret),
        createdAtMs: nowMs,
        lastUsedAtMs: nowMs,
        expiresAtMs: nowMs + ttlMs,
        userAgent: input.userAgent.slice(0, 256),
        ipAddress: input.ipAddress,
      };
      const result = await store.commit({
        checks: [{ key: sessionKey(record.id), version: 0 }],
        puts: [{ key: sessionKey(record.id), value: JSON.stringify(record), ttlMs }],
        indexAdds: [{ index: userSessionsIndex(input.userId), member: record.id }],
      });
      if (!result.ok) throw new Error(`session id ${record.id} collided`);
      return { record, token: `${record.id}.${secret}` };
    },

    async verify(token) {
      const match = tokenPattern.exec(token);
      if (!match?.[1] || !match[2]) return { ok: false, reason: "malformed" };
      const stored = await store.get(sessionKey(match[1]));
      if (!stored) return { ok: false, reason: "unknown" };
      const record = JSON.parse(stored.value) as SessionRecord;
      if (!hashesEqual(sha256Hex(match[2]), record.secretHash)) return { ok: false, reason: "unknown" };
      if (record.expiresAtMs <= now()) return { ok: false, reason: "expired" };
      return { ok: true, session: { record, version: stored.version } };
    },

    async touch({ record, version }) {
      const nowMs = now();
      if (nowMs - record.lastUsedAtMs < lastUseWriteIntervalMs) return undefined;
      const next: SessionRecord = { ...record, lastUsedAtMs: nowMs, expiresAtMs: nowMs + ttlMs };
      const result = await store.commit({
        checks: [{ key: sessionKey(record.id), version }],
        puts: [{ key: sessionKey(record.id), value: JSON.stringify(next), ttlMs }],
      });
      return result.ok ? next : undefined;
    },

    get,

    async listForUser(userId) {
      const index = userSessionsIndex(userId);
      const ids = await store.range(index, { limit: maxListed });
      const stored = await store.getMany(ids.map(sessionKey));
      const nowMs = now();
      const live: SessionRecord[] = [];
      const gone: string[] = [];
      stored.forEach((entry, i) => {
        const record = entry && (JSON.parse(entry.value) as SessionRecord);
        if (record && record.expiresAtMs > nowMs) live.push(record);
        else if (!entry) gone.push(ids[i] ?? "");
      });
      // Expired sessions vanish from the store by TTL; their index members are dropped here.
      if (gone.length > 0) {
        await store.commit({ indexRemoves: gone.map((member) => ({ index, member })) });
      }
      return live.sort((a, b) => b.lastUsedAtMs - a.lastUsedAtMs || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    },

    delete: remove,
  };
}
