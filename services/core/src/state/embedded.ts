import { EventEmitter } from "node:events";
import type { CommitResult, Hit, RangeOptions, StateStore, StoredValue, Transaction } from "./store.js";

interface Entry extends StoredValue {
  expiresAtMs?: number;
}

/** Options for {@link createEmbeddedStore}. */
export interface EmbeddedStoreOptions {
  /** Reads the time; tests move it. */
  now?: () => number;
}

/**
 * The embedded state store: everything in this process's memory. The default mode of
 * `npm start`; one core process only.
 */
export async function createEmbeddedStore(options: EmbeddedStoreOptions = {}): Promise<StateStore> {
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry>();
  const indexes = new Map<string, Set<string>>();
  const counters = new Map<string, Hit>();
  const bus = new EventEmitter();
  bus.setMaxListeners(0);
  let closed = false;

  const live = (key: string): Entry | undefined => {
    const entry = entries.get(key);
    if (entry?.expiresAtMs !== undefined && entry.expiresAtMs <= now()) {
      entries.delete(key);
      return undefined;
    }
    return entry;
  };
  const assertOpen = () => {
    if (closed) throw new Error("state store is closed");
  };

  return {
    driver: "embedded",
    async get(key) {
      assertOpen();
      const entry = live(key);
      return entry && { value: entry.value, version: entry.version };
    },
    async getMany(keys) {
      assertOpen();
      return keys.map((key) => {
        const entry = live(key);
        return entry && { value: entry.value, version: entry.version };
      });
    },
    async commit(transaction: Transaction): Promise<CommitResult> {
      assertOpen();
      for (const check of transaction.checks ?? []) {
        if ((live(check.key)?.version ?? 0) !== check.version) return { ok: false, conflictKey: check.key };
      }
      const versions: Record<string, number> = {};
      for (const key of transaction.deletes ?? []) entries.delete(key);
      for (const put of transaction.puts ?? []) {
        const version = (live(put.key)?.version ?? 0) + 1;
        entries.set(put.key, {
          value: put.value,
          version,
          ...(put.ttlMs === undefined ? {} : { expiresAtMs: now() + put.ttlMs }),
        });
        versions[put.key] = version;
      }
      for (const { index, member } of transaction.indexRemoves ?? []) indexes.get(index)?.delete(member);
      for (const { index, member } of transaction.indexAdds ?? []) {
        const set = indexes.get(index) ?? new Set<string>();
        indexes.set(index, set);
        set.add(member);
      }
      return { ok: true, versions };
    },
    async range(index, { after, prefix, limit }: RangeOptions) {
      assertOpen();
      const members = [...(indexes.get(index) ?? [])]
        .filter((member) => (after === undefined || member > after) && (!prefix || member.startsWith(prefix)))
        .sort();
      return members.slice(0, limit);
    },
    async count(index) {
      assertOpen();
      return indexes.get(index)?.size ?? 0;
    },
    async hit(key, windowMs) {
      assertOpen();
      const current = counters.get(key);
      if (!current || current.resetAtMs <= now()) {
        const fresh = { count: 1, resetAtMs: now() + windowMs };
        counters.set(key, fresh);
        return { ...fresh };
      }
      current.count += 1;
      return { ...current };
    },
    async publish(channel, message) {
      assertOpen();
      queueMicrotask(() => bus.emit(channel, message));
    },
    async subscribe(channel, listener) {
      assertOpen();
      bus.on(channel, listener);
      return async () => {
        bus.off(channel, listener);
      };
    },
    async ping() {
      return !closed;
    },
    async close() {
      closed = true;
      bus.removeAllListeners();
    },
  };
}
