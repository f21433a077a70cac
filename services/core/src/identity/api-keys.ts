import { Code, ConnectError } from "@connectrpc/connect";
import { mirrorId, newId } from "../ids.js";
import type { ApiKeyRecord, Scope, Versioned } from "../model.js";
import type { StateStore } from "../state/store.js";
import { hashesEqual, randomSecret, sha256Hex } from "./secrets.js";
import { lastUseWriteIntervalMs } from "./sessions.js";

/** The key of an API key record. */
export const apiKeyKey = (keyId: string): string => `apikey:${keyId}`;
/** The index of a user's API keys; members are {@link apiKeyIndexMember}s, so it lists newest first. */
export const userApiKeysIndex = (userId: string): string => `user-apikeys:${userId}`;
/**
 * A per-user key written by every key creation, checked at the version read: concurrent
 * creations of one user serialize, so the limit on active keys holds.
 */
export const apiKeyCreationKey = (userId: string): string => `apikey-creation:${userId}`;

/** How long a revoked key stays listable (ListApiKeys include_revoked) before the store drops it. */
export const revokedKeyRetentionMs = 30 * 86_400_000;

const secretPattern = /^dvx_([0-9a-z]{26})_[A-Za-z0-9_-]{43}$/;
/** How many characters of the secret are kept to recognise it (`dvx_` and 8 of the id). */
export const apiKeyPrefixLength = 12;
/** At most this many keys of one user are looked at when counting active keys. */
const maxScanned = 10_000;

/** The index member of a key id: the id characters mirrored so the index sorts newest first. */
export function apiKeyIndexMember(keyId: string): string {
  return mirrorId(keyId.slice("key_".length));
}

/** The key id of a member of {@link userApiKeysIndex}. */
export function apiKeyIdOfMember(member: string): string {
  return `key_${mirrorId(member)}`;
}

/**
 * The key id embedded in an API key secret (`dvx_<id without "key_">_<43 random base64url>`),
 * or undefined when the text is not shaped like a secret.
 */
export function apiKeyIdOfSecret(secret: string): string | undefined {
  const match = secretPattern.exec(secret);
  return match?.[1] && `key_${match[1]}`;
}

/** Whether a key authenticates calls, expired, or was revoked. */
export type ApiKeyState = "active" | "expired" | "revoked";

/** The state of a key at a time. */
export function apiKeyState(record: ApiKeyRecord, nowMs: number): ApiKeyState {
  if (record.revokedAtMs !== undefined) return "revoked";
  if (record.expiresAtMs !== undefined && record.expiresAtMs <= nowMs) return "expired";
  return "active";
}

/** What a new key is created from. */
export interface NewApiKey {
  userId: string;
  name: string;
  scope: Scope;
  expiresAtMs?: number;
}

/** A new key and its secret, which exists only in this value. */
export interface CreatedApiKey {
  record: ApiKeyRecord;
  secret: string;
}

/** The outcome of {@link ApiKeyRepository.verify}. */
export type ApiKeyCheck =
  | { ok: true; key: Versioned<ApiKeyRecord> }
  | {
      ok: false;
      reason: "malformed" | "unknown" | "revoked" | "expired";
      /** The id embedded in the secret, when it parsed. */
      keyId?: string;
    };

/** A page of keys. */
export interface ApiKeyPage {
  keys: ApiKeyRecord[];
  /** The last index member looked at: pass it as `after` for the next page; undefined on the last page. */
  nextAfter?: string;
}

/** Options for {@link ApiKeyRepository.list}. */
export interface ApiKeyListOptions {
  limit: number;
  after?: string;
  includeRevoked: boolean;
}

/** Options for {@link createApiKeyRepository}. */
export interface ApiKeyRepositoryOptions {
  /** Active (unrevoked, unexpired) keys one user may hold; creating more fails with ResourceExhausted. */
  maxActivePerUser: number;
  now: () => number;
}

/** API keys: random secrets shown once, stored as SHA-256, looked up by the id they embed. */
export interface ApiKeyRepository {
  /** Creates a key; ResourceExhausted when the user already has `maxActivePerUser` active keys. */
  create(input: NewApiKey): Promise<CreatedApiKey>;
  /** Checks a secret: the embedded id must exist and the hash match (in constant time). */
  verify(secret: string): Promise<ApiKeyCheck>;
  /** Records a use, at most once a minute; returns the new record when written. */
  touch(key: Versioned<ApiKeyRecord>): Promise<ApiKeyRecord | undefined>;
  get(keyId: string): Promise<Versioned<ApiKeyRecord> | undefined>;
  /** A user's keys, newest first. */
  list(userId: string, options: ApiKeyListOptions): Promise<ApiKeyPage>;
  /**
   * Revokes one of the user's keys; a revoked key is returned unchanged (idempotent).
   * Undefined when the user has no such key.
   */
  revoke(userId: string, keyId: string): Promise<ApiKeyRecord | undefined>;
}

/** An {@link ApiKeyRepository} over the state store. */
export function createApiKeyRepository(store: StateStore, options: ApiKeyRepositoryOptions): ApiKeyRepository {
  const { now } = options;

  const get = async (keyId: string): Promise<Versioned<ApiKeyRecord> | undefined> => {
    const stored = await store.get(apiKeyKey(keyId));
    return stored && { record: JSON.parse(stored.value) as ApiKeyRecord, version: stored.version };
  };

  /** The user's keys in index order (newest first), dropping index members whose record is gone. */
  const scan = async (userId: string, limit: number, after?: string) => {
    const index = userApiKeysIndex(userId);
    const members = await store.range(index, { limit, ...(after === undefined ? {} : { after }) });
    const stored = await store.getMany(members.map((m) => apiKeyKey(apiKeyIdOfMember(m))));
    const gone = members.filter((_, i) => !stored[i]);
    if (gone.length > 0) await store.commit({ indexRemoves: gone.map((member) => ({ index, member })) });
    const keys = stored.flatMap((s) => (s ? [JSON.parse(s.value) as ApiKeyRecord] : []));
    return { members, keys };
  };

  const create = async (input: NewApiKey): Promise<CreatedApiKey> => {
    for (;;) {
      const lock = await store.get(apiKeyCreationKey(input.userId));
      const { keys } = await scan(input.userId, maxScanned);
      const nowMs = now();
      const active = keys.filter((k) => apiKeyState(k, nowMs) === "active").length;
      if (active >= options.maxActivePerUser) {
        throw new ConnectError(
          `you have ${active} active API keys, the most allowed: revoke one first`,
          Code.ResourceExhausted,
        );
      }
      const id = newId("key", nowMs);
      const secret = `dvx_${id.slice("key_".length)}_${randomSecret(32)}`;
      const record: ApiKeyRecord = {
        id,
        userId: input.userId,
        name: input.name,
        prefix: secret.slice(0, apiKeyPrefixLength),
        secretHash: sha256Hex(secret),
        scope: input.scope,
        createdAtMs: nowMs,
        ...(input.expiresAtMs === undefined ? {} : { expiresAtMs: input.expiresAtMs }),
      };
      const result = await store.commit({
        checks: [
          { key: apiKeyCreationKey(input.userId), version: lock?.version ?? 0 },
          { key: apiKeyKey(id), version: 0 },
        ],
        puts: [
          { key: apiKeyCreationKey(input.userId), value: id },
          { key: apiKeyKey(id), value: JSON.stringify(record) },
        ],
        indexAdds: [{ index: userApiKeysIndex(input.userId), member: apiKeyIndexMember(id) }],
      });
      if (result.ok) return { record, secret };
    }
  };

  return {
    create,

    async verify(secret) {
      const keyId = apiKeyIdOfSecret(secret);
      if (!keyId) return { ok: false, reason: "malformed" };
      const stored = await get(keyId);
      // The hash is compared even for an unknown id, so both cases take the same time.
      const hash = sha256Hex(secret);
      if (!stored || !hashesEqual(hash, stored.record.secretHash)) return { ok: false, reason: "unknown", keyId };
      const state = apiKeyState(stored.record, now());
      if (state !== "active") return { ok: false, reason: state, keyId };
      return { ok: true, key: stored };
    },

    async touch({ record, version }) {
      const nowMs = now();
      if (record.lastUsedAtMs !== undefined && nowMs - record.lastUsedAtMs < lastUseWriteIntervalMs) return undefined;
      const next: ApiKeyRecord = { ...record, lastUsedAtMs: nowMs };
      const result = await store.commit({
        checks: [{ key: apiKeyKey(record.id), version }],
        puts: [{ key: apiKeyKey(record.id), value: JSON.stringify(next) }],
      });
      return result.ok ? next : undefined;
    },

    get,

    async list(userId, { limit, after, includeRevoked }) {
      const keys: ApiKeyRecord[] = [];
      let cursor = after;
      // Revoked keys are skipped unless asked for, so a page may take several index reads;
      // one key beyond the page tells whether there is a next page.
      for (;;) {
        const batch = await scan(userId, limit + 1, cursor);
        for (const key of batch.keys) {
          if (!includeRevoked && key.revokedAtMs !== undefined) continue;
          const last = keys.at(-1);
          if (keys.length === limit && last) return { keys, nextAfter: apiKeyIndexMember(last.id) };
          keys.push(key);
        }
        const last = batch.members.at(-1);
        if (batch.members.length <= limit || last === undefined) return { keys };
        cursor = last;
      }
    },

    async revoke(userId, keyId) {
      for (;;) {
        const current = await get(keyId);
        if (!current || current.record.userId !== userId) return undefined;
        if (current.record.revokedAtMs !== undefined) return current.record;
        const next: ApiKeyRecord = { ...current.record, revokedAtMs: now() };
        const result = await store.commit({
          checks: [{ key: apiKeyKey(keyId), version: current.version }],
          puts: [{ key: apiKeyKey(keyId), value: JSON.stringify(next), ttlMs: revokedKeyRetentionMs }],
        });
        if (result.ok) return next;
      }
    },
  };
}
