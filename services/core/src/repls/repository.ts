import { Code, ConnectError } from "@connectrpc/connect";
import { mirrorId } from "../ids.js";
import type { ReplRecord, Versioned } from "../model.js";
import type { StateStore, StoredValue, Transaction } from "../state/store.js";
import { assertTransition } from "./state-machine.js";

/**
 * What the repository stores for a repl: the shared {@link ReplRecord} plus the fields only
 * the repls component reads.
 */
export interface StoredRepl extends ReplRecord {
  /**
   * A random id of the transition in progress (starting, stopping, deleting). The worker that
   * committed it finishes it only while it is still its own, so a superseded worker (a force
   * stop aborted its start, the reconciler took over) never commits over a newer transition.
   */
  transitionId?: string;
  /** When the repl last became running, while it holds a running runner: runner time accounting. */
  runningSinceMs?: number;
  /** Runner time of the runs that ended, in ms. */
  runnerTimeMs?: number;
  /** How many times the repl became stopped: a stop taken over by another learns that one completed. */
  stopCount?: number;
  /**
   * The core replica that owns the repl's runner and its transition in progress: the one that
   * last started, stopped or deleted it, or claimed it from a replica whose lease ran out (see
   * replicas.ts). Only the owner's reconciler acts on the repl.
   */
  ownerCoreId?: string;
  /** The runner the repl runs on (the orchestrator's `RunnerInstance.id`), while it holds one. */
  runnerId?: string;
}

/** The key of a repl's record; its store version is the API's `Repl.version`. */
export const replKey = (replId: string): string => `repl:${replId}`;
/** The key reserving a repl name for one owner; its value is the repl id. */
export const replNameKey = (ownerUserId: string, name: string): string => `repl-name:${ownerUserId}:${name}`;
/** The key holding a repl's last activity time (ms): written often, so kept out of the versioned record. */
export const replActivityKey = (replId: string): string => `repl-activity:${replId}`;
/** The key counting an owner's repls, checked on create so the quota holds under concurrent creates. */
export const replCountKey = (ownerUserId: string): string => `repl-count:${ownerUserId}`;
/** The key summing the runner time (ms) of an owner's deleted repls, so usage survives deletion. */
export const replUsageKey = (ownerUserId: string): string => `repl-usage:${ownerUserId}`;
/** The index of one owner's repls (members: see {@link replIndexMember}). */
export const userReplsIndex = (ownerUserId: string): string => `user-repls:${ownerUserId}`;
/** The index of every repl (members: see {@link replIndexMember}). */
export const allReplsIndex = "repls";
/** The channel a repl's changes and deletion are published on, for watchers in every replica. */
export const replChannel = (replId: string): string => `repl:${replId}`;

/**
 * The index member of a repl id: its 26 id characters with every digit mirrored in the id
 * alphabet, so that the indexes' ascending byte order is newest first (ids sort by creation).
 */
export function replIndexMember(replId: string): string {
  return mirrorId(replId.slice("repl_".length));
}

/** The repl id of an index member (the inverse of {@link replIndexMember}). */
export function replIdOfMember(member: string): string {
  return `repl_${mirrorId(member)}`;
}

/** A message on {@link replChannel}. */
export type ReplEvent =
  | { type: "repl"; version: number; record: StoredRepl }
  | { type: "deleted"; replId: string; deletedAtMs: number };

/** The result of {@link ReplRepository.update}. */
export interface UpdateResult {
  /** The record after the call (the stored one when nothing was written). */
  repl: Versioned<StoredRepl>;
  /** Whether this call wrote it. */
  changed: boolean;
}

/** Options for {@link ReplRepository.update}. */
export interface UpdateOptions {
  /** The caller's expected_version: non-zero means the record must be at exactly this version. */
  expectedVersion?: number;
}

/** A page of an index scan. */
export interface ScanResult {
  repls: Versioned<StoredRepl>[];
  /** The last index member looked at: where the next page continues; undefined when nothing was scanned. */
  lastMember?: string;
  /** True when the index has no members after `lastMember`. */
  done: boolean;
}

/** Options for {@link ReplRepository.scan}. */
export interface ScanOptions {
  /** Continue after this member (exclusive). */
  after?: string;
  /** Stop once this many repls matched. */
  limit: number;
  /** Only these repls count towards the page. */
  filter?: (repl: StoredRepl) => boolean;
  /** Look at most at this many members in one call, so a rare filter returns a short page rather than scan forever. */
  maxScanned?: number;
}

/**
 * Typed access to repl records. Every write checks the version it read, so concurrent
 * replicas cannot interleave a read-modify-write; every committed change is published on
 * {@link replChannel}.
 */
export interface ReplRepository {
  get(replId: string): Promise<Versioned<StoredRepl> | undefined>;
  /** The owner's repl with this name. */
  findByName(ownerUserId: string, name: string): Promise<Versioned<StoredRepl> | undefined>;
  /**
   * Stores a new repl, reserving its name for the owner. Throws AlreadyExists when the owner
   * has a repl of that name, ResourceExhausted when the owner already has `quota` repls.
   */
  create(record: StoredRepl, quota: number): Promise<Versioned<StoredRepl>>;
  /**
   * Read → change → commit at the version read. `change` returns the new record, or undefined
   * to write nothing; it may throw to refuse. State changes are checked against the state
   * machine, a new name is reserved (AlreadyExists if taken) and the old one released in the
   * same transaction. Without `expectedVersion`, a conflict re-reads and retries; with it, a
   * different version fails with FailedPrecondition naming the current version.
   */
  update(
    replId: string,
    change: (current: Versioned<StoredRepl>) => StoredRepl | undefined,
    options?: UpdateOptions,
  ): Promise<UpdateResult>;
  /**
   * Removes a deleting repl's record, name, activity and index entries, folding its runner time
   * into the owner's usage. Returns false when it was already gone.
   */
  remove(replId: string): Promise<boolean>;
  /**
   * Records activity without changing the record's version (repl.proto: last_active_at). Skipped
   * when the record changes meanwhile: the next check writes it.
   */
  recordActivity(replId: string, atMs: number): Promise<void>;
  /** Repls of an index in its order (newest first), filtered, from `after`. */
  scan(index: string, options: ScanOptions): Promise<ScanResult>;
  /** Every repl of an index (for the reconciler, idle checks and usage). */
  all(index?: string): AsyncGenerator<Versioned<StoredRepl>>;
  /** Receives a repl's events until the returned function is called. */
  subscribe(replId: string, listener: (event: ReplEvent) => void): Promise<() => Promise<void>>;
  /**
   * Resolves once the repl is no longer at `version` (or is gone), with its new state: woken by
   * the channel, and polling every `pollIntervalMs` in case a message was lost.
   */
  waitForChange(replId: string, version: number, signal?: AbortSignal): Promise<Versioned<StoredRepl> | undefined>;
}

/** Options for {@link createReplRepository}. */
export interface ReplRepositoryOptions {
  store: StateStore;
  /** Reads the time; tests move it. Default `Date.now`. */
  now?: () => number;
  /** How often {@link ReplRepository.waitForChange} re-reads when no message arrives, in ms. Default 1000. */
  pollIntervalMs?: number;
}

const maxAttempts = 100;

/** The error of an expected_version that does not match (repl.proto: FAILED_PRECONDITION, nothing changed). */
export function versionMismatch(replId: string, expected: number, current: number): ConnectError {
  return new ConnectError(
    `repl ${replId} is at version ${current}, not the expected version ${expected}`,
    Code.FailedPrecondition,
  );
}

/** The NotFound error for a repl, the same whether it does not exist or belongs to someone else. */
export function replNotFound(replId: string): ConnectError {
  return new ConnectError(`repl ${replId} not found`, Code.NotFound);
}

/** Creates the repository over a state store. */
export function createReplRepository(options: ReplRepositoryOptions): ReplRepository {
  const { store } = options;
  const now = options.now ?? Date.now;
  const pollIntervalMs = options.pollIntervalMs ?? 1000;

  const parse = (stored: StoredValue, activity: StoredValue | undefined): Versioned<StoredRepl> => {
    const record = JSON.parse(stored.value) as StoredRepl;
    const activeAtMs = activity === undefined ? undefined : Number(activity.value);
    if (activeAtMs !== undefined && activeAtMs > (record.lastActiveAtMs ?? 0)) record.lastActiveAtMs = activeAtMs;
    return { record, version: stored.version };
  };

  const getMany = async (replIds: readonly string[]): Promise<(Versioned<StoredRepl> | undefined)[]> => {
    const values = await store.getMany(replIds.flatMap((id) => [replKey(id), replActivityKey(id)]));
    return replIds.map((_, i) => {
      const stored = values[2 * i];
      return stored && parse(stored, values[2 * i + 1]);
    });
  };

  const get = async (replId: string) => (await getMany([replId]))[0];

  const publish = async (replId: string, event: ReplEvent) => {
    await store.publish(replChannel(replId), JSON.stringify(event));
  };

  /**
   * Bookkeeping every commit keeps: completed stops are counted, and runner time counts from
   * becoming running until the repl no longer holds a running runner.
   */
  const account = (current: StoredRepl, proposed: StoredRepl, atMs: number): StoredRepl => {
    const next =
      proposed.state === "stopped" && current.state !== "stopped"
        ? { ...proposed, stopCount: (current.stopCount ?? 0) + 1 }
        : proposed;
    const wasRunning = current.state === "running" || current.state === "stopping";
    const isRunning = next.state === "running" || next.state === "stopping";
    if (!wasRunning && next.state === "running") return { ...next, runningSinceMs: atMs };
    if (wasRunning && !isRunning && current.runningSinceMs !== undefined) {
      const { runningSinceMs, ...rest } = next;
      return { ...rest, runnerTimeMs: (current.runnerTimeMs ?? 0) + Math.max(0, atMs - current.runningSinceMs) };
    }
    return next;
  };

  const scan: ReplRepository["scan"] = async (index, scanOptions) => {
    const { limit, filter } = scanOptions;
    const maxScanned = scanOptions.maxScanned ?? Math.max(1000, limit * 20);
    const repls: Versioned<StoredRepl>[] = [];
    let after = scanOptions.after;
    let scanned = 0;
    while (scanned < maxScanned) {
      const batch = Math.min(Math.max(limit - repls.length, 1) * 2, 500, maxScanned - scanned);
      const members = await store.range(index, { ...(after === undefined ? {} : { after }), limit: batch });
      const found = await getMany(members.map(replIdOfMember));
      for (const [i, member] of members.entries()) {
        after = member;
        scanned++;
        const repl = found[i];
        if (repl && (!filter || filter(repl.record))) repls.push(repl);
        if (repls.length >= limit) {
          const rest = await store.range(index, { after: member, limit: 1 });
          return { repls, lastMember: member, done: rest.length === 0 };
        }
      }
      if (members.length < batch) return { repls, ...(after === undefined ? {} : { lastMember: after }), done: true };
    }
    return { repls, ...(after === undefined ? {} : { lastMember: after }), done: false };
  };

  const subscribe: ReplRepository["subscribe"] = (replId, listener) =>
    store.subscribe(replChannel(replId), (message) => {
      let event: ReplEvent;
      try {
        event = JSON.parse(message) as ReplEvent;
      } catch {
        return;
      }
      listener(event);
    });

  return {
    get,

    async findByName(ownerUserId, name) {
      const reserved = await store.get(replNameKey(ownerUserId, name));
      if (!reserved) return undefined;
      const repl = await get(reserved.value);
      return repl?.record.ownerUserId === ownerUserId && repl.record.name === name ? repl : undefined;
    },

    async create(record, quota) {
      for (let attempt = 0; attempt < maxAttempts; attempt++) {
        const counted = await store.get(replCountKey(record.ownerUserId));
        const count = counted ? Number(counted.value) : 0;
        if (count >= quota) {
          throw new ConnectError(
            `repl quota reached: you may own at most ${quota} repls; delete one first`,
            Code.ResourceExhausted,
          );
        }
        const member = replIndexMember(record.id);
        const result = await store.commit({
          checks: [
            { key: replKey(record.id), version: 0 },
            { key: replNameKey(record.ownerUserId, record.name), version: 0 },
            { key: replCountKey(record.ownerUserId), version: counted?.version ?? 0 },
          ],
          puts: [
            { key: replKey(record.id), value: JSON.stringify(record) },
            { key: replNameKey(record.ownerUserId, record.name), value: record.id },
            { key: replCountKey(record.ownerUserId), value: String(count + 1) },
          ],
          indexAdds: [
            { index: userReplsIndex(record.ownerUserId), member },
            { index: allReplsIndex, member },
          ],
        });
        if (result.ok) {
          const version = result.versions[replKey(record.id)] ?? 1;
          await publish(record.id, { type: "repl", version, record });
          return { record, version };
        }
        if (result.conflictKey === replNameKey(record.ownerUserId, record.name)) {
          throw new ConnectError(`you already have a repl named ${record.name}`, Code.AlreadyExists);
        }
        if (result.conflictKey === replKey(record.id)) {
          throw new ConnectError(`repl id ${record.id} is already taken`, Code.Internal);
        }
      }
      throw new ConnectError("too many concurrent changes; try again", Code.Aborted);
    },

    async update(replId, change, updateOptions = {}) {
      const expected = updateOptions.expectedVersion ?? 0;
      for (let attempt = 0; attempt < maxAttempts; attempt++) {
        const current = await get(replId);
        if (!current) throw replNotFound(replId);
        if (expected !== 0 && current.version !== expected) throw versionMismatch(replId, expected, current.version);
        const proposed = change(current);
        if (proposed === undefined) return { repl: current, changed: false };
        assertTransition(current.record.state, proposed.state);
        const atMs = now();
        const next = account(current.record, { ...proposed, updatedAtMs: atMs }, atMs);
        const transaction: Transaction = {
          checks: [{ key: replKey(replId), version: current.version }],
          puts: [{ key: replKey(replId), value: JSON.stringify(next) }],
        };
        const renamed = next.name !== current.record.name;
        const newNameKey = replNameKey(next.ownerUserId, next.name);
        if (renamed) {
          transaction.checks?.push({ key: newNameKey, version: 0 });
          transaction.puts?.push({ key: newNameKey, value: replId });
          transaction.deletes = [replNameKey(current.record.ownerUserId, current.record.name)];
        }
        const result = await store.commit(transaction);
        if (result.ok) {
          const repl = { record: next, version: result.versions[replKey(replId)] ?? current.version + 1 };
          await publish(replId, { type: "repl", version: repl.version, record: next });
          return { repl, changed: true };
        }
        if (renamed && result.conflictKey === newNameKey) {
          throw new ConnectError(`you already have a repl named ${next.name}`, Code.AlreadyExists);
        }
        if (expected !== 0) {
          const latest = await get(replId);
          if (!latest) throw replNotFound(replId);
          throw versionMismatch(replId, expected, latest.version);
        }
      }
      throw new ConnectError(`repl ${replId} is changing too often; try again`, Code.Aborted);
    },

    async remove(replId) {
      for (let attempt = 0; attempt < maxAttempts; attempt++) {
        const current = await get(replId);
        if (!current) return false;
        const { record } = current;
        if (record.state !== "deleting") {
          throw new ConnectError(`repl ${replId} is ${record.state}, not deleting`, Code.FailedPrecondition);
        }
        const [counted, usage] = await store.getMany([
          replCountKey(record.ownerUserId),
          replUsageKey(record.ownerUserId),
        ]);
        const count = counted ? Number(counted.value) : 1;
        const runnerTimeMs = record.runnerTimeMs ?? 0;
        const member = replIndexMember(replId);
        const result = await store.commit({
          checks: [
            { key: replKey(replId), version: current.version },
            { key: replCountKey(record.ownerUserId), version: counted?.version ?? 0 },
            { key: replUsageKey(record.ownerUserId), version: usage?.version ?? 0 },
          ],
          deletes: [replKey(replId), replNameKey(record.ownerUserId, record.name), replActivityKey(replId)],
          puts: [
            { key: replCountKey(record.ownerUserId), value: String(Math.max(0, count - 1)) },
            { key: replUsageKey(record.ownerUserId), value: String(Number(usage?.value ?? 0) + runnerTimeMs) },
          ],
          indexRemoves: [
            { index: userReplsIndex(record.ownerUserId), member },
            { index: allReplsIndex, member },
          ],
        });
        if (result.ok) {
          await publish(replId, { type: "deleted", replId, deletedAtMs: now() });
          return true;
        }
      }
      throw new ConnectError(`repl ${replId} is changing too often; try again`, Code.Aborted);
    },

    async recordActivity(replId, atMs) {
      // Only next to an existing record, so a deletion in between leaves no stray key behind.
      const stored = await store.get(replKey(replId));
      if (!stored) return;
      await store.commit({
        checks: [{ key: replKey(replId), version: stored.version }],
        puts: [{ key: replActivityKey(replId), value: String(atMs) }],
      });
    },

    scan,

    async *all(index = allReplsIndex) {
      let after: string | undefined;
      for (;;) {
        const page = await scan(index, { ...(after === undefined ? {} : { after }), limit: 200 });
        yield* page.repls;
        if (page.done || page.lastMember === undefined) return;
        after = page.lastMember;
      }
    },

    subscribe,

    async waitForChange(replId, version, signal) {
      signal?.throwIfAborted();
      let wake: () => void = () => {};
      const unsubscribe = await subscribe(replId, (event) => {
        if (event.type === "deleted" || event.version !== version) wake();
      });
      try {
        for (;;) {
          const current = await get(replId);
          if (!current || current.version !== version) return current;
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(done, pollIntervalMs);
            const onAbort = () => {
              clearTimeout(timer);
              reject(signal?.reason);
            };
            function done() {
              clearTimeout(timer);
              signal?.removeEventListener("abort", onAbort);
              resolve();
            }
            wake = done;
            signal?.addEventListener("abort", onAbort, { once: true });
          });
        }
      } finally {
        await unsubscribe();
      }
    },
  };
}
