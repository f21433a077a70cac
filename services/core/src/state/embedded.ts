import { EventEmitter } from "node:events";
import { type FileHandle, mkdir, open, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { processExists } from "@devex/kit";
import type { CommitResult, Hit, IndexEntry, RangeOptions, StateStore, StoredValue, Transaction } from "./store.js";

interface Entry extends StoredValue {
  expiresAtMs?: number;
}

/** Options for {@link createEmbeddedStore}. */
export interface EmbeddedStoreOptions {
  /** Reads the time; tests move it. */
  now?: () => number;
  /**
   * Persists the store under `<dataDir>/state/` (a journal and a snapshot) and locks that folder
   * against a second process. Without it the store lives in memory only.
   */
  dataDir?: string;
  /** On open, a journal larger than this many bytes is folded into the snapshot. Default 1 MiB. */
  compactJournalBytes?: number;
}

/** A put as the journal and the snapshot keep it: the resulting version and an absolute expiry. */
interface StoredEntry {
  key: string;
  value: string;
  version: number;
  expiresAtMs?: number;
}

/** One committed transaction's effect; one JSON line of the journal. */
interface JournalRecord {
  seq: number;
  deletes?: string[];
  puts?: StoredEntry[];
  indexRemoves?: IndexEntry[];
  indexAdds?: IndexEntry[];
}

/** The snapshot file: the whole state after the journal record `seq`. */
interface Snapshot {
  format: 1;
  seq: number;
  entries: StoredEntry[];
  indexes: Record<string, string[]>;
}

const defaultCompactJournalBytes = 1024 * 1024;

/**
 * The embedded state store, for `npm start` and one core process. Everything lives in this
 * process's memory; with `dataDir` every commit is also appended to a journal (and fsynced)
 * before it resolves, and the journal is replayed on the next open. A commit the journal
 * refuses (a full disk, a read-only or failing one) is taken back from memory, so memory
 * never runs ahead of the disk; writes are then refused until {@link StateStore.ping} finds
 * the journal writable again, while reads go on.
 */
export async function createEmbeddedStore(options: EmbeddedStoreOptions = {}): Promise<StateStore> {
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry>();
  const indexes = new Map<string, Set<string>>();
  const counters = new Map<string, Hit>();
  const bus = new EventEmitter();
  bus.setMaxListeners(0);
  let closed = false;
  let seq = 0;

  const live = (key: string): Entry | undefined => {
    const entry = entries.get(key);
    if (entry?.expiresAtMs !== undefined && entry.expiresAtMs <= now()) {
      entries.delete(key);
      return undefined;
    }
    return entry;
  };
  /** What `record` is about to change, as a function that puts it back (for a commit the journal refused). */
  const undoOf = (record: JournalRecord): (() => void) => {
    const seqBefore = seq;
    const keys = new Set([...(record.deletes ?? []), ...(record.puts ?? []).map((put) => put.key)]);
    const entriesBefore = [...keys].map((key) => ({ key, entry: entries.get(key) }));
    const membersBefore = [...(record.indexRemoves ?? []), ...(record.indexAdds ?? [])].map(({ index, member }) => ({
      index,
      member,
      had: indexes.get(index)?.has(member) ?? false,
    }));
    return () => {
      seq = seqBefore;
      for (const { key, entry } of entriesBefore) {
        if (entry) entries.set(key, entry);
        else entries.delete(key);
      }
      for (const { index, member, had } of membersBefore) {
        const set = indexes.get(index) ?? new Set<string>();
        if (had) set.add(member);
        else set.delete(member);
        if (set.size > 0) indexes.set(index, set);
        else indexes.delete(index);
      }
    };
  };
  const apply = (record: JournalRecord) => {
    seq = record.seq;
    for (const key of record.deletes ?? []) entries.delete(key);
    for (const { key, ...entry } of record.puts ?? []) entries.set(key, entry);
    for (const { index, member } of record.indexRemoves ?? []) {
      const set = indexes.get(index);
      set?.delete(member);
      if (set?.size === 0) indexes.delete(index);
    }
    for (const { index, member } of record.indexAdds ?? []) {
      const set = indexes.get(index) ?? new Set<string>();
      indexes.set(index, set);
      set.add(member);
    }
  };

  const journal = options.dataDir
    ? await openJournal(join(options.dataDir, "state"), {
        apply,
        snapshot: () => snapshotOf(seq, entries, indexes, now()),
        compactJournalBytes: options.compactJournalBytes ?? defaultCompactJournalBytes,
      })
    : undefined;

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
      journal?.assertWritable();
      for (const check of transaction.checks ?? []) {
        if ((live(check.key)?.version ?? 0) !== check.version) return { ok: false, conflictKey: check.key };
      }
      // Versions as the writes of this transaction leave them, in order: deletes, then puts.
      const written = new Map<string, number>();
      for (const key of transaction.deletes ?? []) written.set(key, 0);
      const versions: Record<string, number> = {};
      const puts = (transaction.puts ?? []).map(({ key, value, ttlMs }): StoredEntry => {
        const version = (written.get(key) ?? live(key)?.version ?? 0) + 1;
        written.set(key, version);
        versions[key] = version;
        return { key, value, version, ...(ttlMs === undefined ? {} : { expiresAtMs: now() + ttlMs }) };
      });
      const record: JournalRecord = {
        seq: seq + 1,
        ...(transaction.deletes?.length ? { deletes: transaction.deletes } : {}),
        ...(puts.length ? { puts } : {}),
        ...(transaction.indexRemoves?.length ? { indexRemoves: transaction.indexRemoves } : {}),
        ...(transaction.indexAdds?.length ? { indexAdds: transaction.indexAdds } : {}),
      };
      const writes = record.deletes || record.puts || record.indexRemoves || record.indexAdds;
      // Applied in memory right away so that the next commit checks against it; resolved only
      // once durable. The journal keeps the order of application, and takes back what it refuses.
      const undo = writes ? undoOf(record) : undefined;
      if (writes) apply(record);
      await journal?.append(writes ? record : undefined, undo);
      return { ok: true, versions };
    },
    async range(index, { after, prefix, limit }: RangeOptions) {
      assertOpen();
      const members = [...(indexes.get(index) ?? [])]
        .filter((member) => (after === undefined || member > after) && (!prefix || member.startsWith(prefix)))
        .sort();
      return members.slice(0, Math.max(0, limit));
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
      if (closed) return false;
      return journal ? journal.writable() : true;
    },
    async close() {
      if (closed) return;
      closed = true;
      bus.removeAllListeners();
      await journal?.close();
    },
  };
}

function snapshotOf(
  seq: number,
  entries: Map<string, Entry>,
  indexes: Map<string, Set<string>>,
  nowMs: number,
): Snapshot {
  const live: StoredEntry[] = [];
  for (const [key, entry] of entries) {
    if (entry.expiresAtMs === undefined || entry.expiresAtMs > nowMs) live.push({ key, ...entry });
  }
  return {
    format: 1,
    seq,
    entries: live,
    indexes: Object.fromEntries([...indexes].map(([index, members]) => [index, [...members]])),
  };
}

interface JournalOptions {
  apply(record: JournalRecord): void;
  snapshot(): Snapshot;
  compactJournalBytes: number;
}

interface Journal {
  /**
   * Resolves once the record (and every record before it) is on disk; `undefined` only waits.
   * When the write fails, `undo` is called (for this record and every one appended after it,
   * newest first) before the promise rejects.
   */
  append(record: JournalRecord | undefined, undo?: () => void): Promise<void>;
  /** Throws the failure of the last write until {@link Journal.writable} finds the journal writable again. */
  assertWritable(): void;
  /**
   * Whether the journal takes writes. After a failed write it first tries again: cuts what the
   * failed write may have left at the end of the journal and writes and syncs a probe file.
   */
  writable(): Promise<boolean>;
  close(): Promise<void>;
}

interface PendingAppend {
  line: string;
  undo?: () => void;
  resolve(): void;
  reject(error: unknown): void;
}

/** The size of the probe file a failed journal writes before it takes writes again: room for many records. */
const probeBytes = 64 * 1024;

/**
 * Opens the journal under `dir`: takes the lock, loads the snapshot, replays the journal
 * (a torn last line from a crash mid-append is cut off), compacts it when large, and returns
 * the appender. Appends are serialized on one FileHandle; those queued while a write is under
 * way share its fsync. A failed write fails its batch and everything queued after it; the next
 * write comes only after {@link Journal.writable} has cut the journal back to its last synced
 * size, so a torn write never ends up between two good records.
 */
async function openJournal(dir: string, options: JournalOptions): Promise<Journal> {
  // Sessions and key hashes: no other uid of the machine (a repl's, say) may read them.
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const lockPath = join(dir, "lock");
  const journalPath = join(dir, "journal.jsonl");
  const snapshotPath = join(dir, "snapshot.json");
  const probePath = join(dir, "write-probe");
  await acquireLock(lockPath);

  let handle: FileHandle | undefined;
  /** The journal's size as last synced: everything before it is whole records. */
  let syncedBytes = 0;
  try {
    const snapshotSeq = await loadSnapshot(snapshotPath, options.apply);
    const { validBytes, totalBytes } = await replayJournal(journalPath, snapshotSeq, options.apply);
    handle = await open(journalPath, "a");
    syncedBytes = validBytes;
    if (validBytes < totalBytes) {
      // Cut the torn tail so that the next appends start on a fresh line.
      await handle.truncate(validBytes);
      await handle.datasync();
    }
    if (validBytes > options.compactJournalBytes) {
      const temporaryPath = `${snapshotPath}.tmp`;
      await writeDurably(temporaryPath, JSON.stringify(options.snapshot()));
      await rename(temporaryPath, snapshotPath);
      await syncDirectory(dir);
      // A crash before this truncation only leaves records the snapshot's seq already covers.
      await handle.truncate(0);
      await handle.datasync();
      syncedBytes = 0;
    }
  } catch (error) {
    await handle?.close();
    await releaseLock(lockPath);
    throw error;
  }

  const file = handle;
  let pending: PendingAppend[] = [];
  let writing: Promise<void> | undefined;
  /** Why the last write failed; writes are refused until {@link Journal.writable} clears it. */
  let failure: Error | undefined;
  /** Whether the journal may hold bytes after `syncedBytes` (a write that failed midway). */
  let torn = false;
  let recovering: Promise<boolean> | undefined;

  const writeLoop = async () => {
    while (pending.length > 0) {
      const batch = pending;
      pending = [];
      try {
        if (failure) throw failure;
        const text = batch.map((item) => item.line).join("");
        if (text) {
          torn = true;
          await file.appendFile(text);
          // datasync also persists the file's new size, which is all an append changes.
          await file.datasync();
          syncedBytes += Buffer.byteLength(text);
          torn = false;
        }
        for (const item of batch) item.resolve();
      } catch (error) {
        if (error !== failure) {
          failure = new Error(`the state journal ${journalPath} could not be written: ${errorText(error)}`, {
            cause: error,
          });
        }
        // Everything queued after the batch was applied on top of it: it goes too, newest first.
        const refused = [...batch, ...pending];
        pending = [];
        for (const item of [...refused].reverse()) item.undo?.();
        for (const item of refused) item.reject(failure);
      }
    }
    writing = undefined;
  };

  const recover = async (): Promise<boolean> => {
    await writing;
    try {
      if (torn) {
        await file.truncate(syncedBytes);
        await file.datasync();
        torn = false;
      }
      await writeDurably(probePath, "\n".repeat(probeBytes));
      await unlink(probePath);
      failure = undefined;
      return true;
    } catch {
      await unlink(probePath).catch(() => undefined);
      return false;
    }
  };

  return {
    append(record, undo) {
      return new Promise<void>((resolve, reject) => {
        pending.push({ line: record ? `${JSON.stringify(record)}\n` : "", ...(undo ? { undo } : {}), resolve, reject });
        writing ??= writeLoop();
      });
    },
    assertWritable() {
      if (failure) throw failure;
    },
    async writable() {
      if (!failure) return true;
      recovering ??= recover().finally(() => {
        recovering = undefined;
      });
      return recovering;
    },
    async close() {
      await writing;
      await file.close();
      await releaseLock(lockPath);
    },
  };
}

/** Applies the snapshot, if any, and returns the seq of the last record it covers. */
async function loadSnapshot(path: string, apply: (record: JournalRecord) => void): Promise<number> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if (isErrorCode(error, "ENOENT")) return 0;
    throw error;
  }
  const snapshot = JSON.parse(text) as Snapshot;
  if (snapshot.format !== 1) throw new Error(`state snapshot ${path} has an unknown format ${String(snapshot.format)}`);
  apply({
    seq: snapshot.seq,
    puts: snapshot.entries,
    indexAdds: Object.entries(snapshot.indexes).flatMap(([index, members]) =>
      members.map((member) => ({ index, member })),
    ),
  });
  return snapshot.seq;
}

/**
 * Applies the journal's records after `afterSeq`. Returns how many leading bytes are whole
 * records: only a torn last line may follow them; a bad line with good ones after it is
 * corruption and throws.
 */
async function replayJournal(
  path: string,
  afterSeq: number,
  apply: (record: JournalRecord) => void,
): Promise<{ validBytes: number; totalBytes: number }> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (error) {
    if (isErrorCode(error, "ENOENT")) return { validBytes: 0, totalBytes: 0 };
    throw error;
  }
  let start = 0;
  while (start < data.length) {
    const end = data.indexOf(0x0a, start);
    const record = end === -1 ? undefined : parseRecord(data.toString("utf8", start, end));
    if (!record) {
      if (end !== -1 && data.indexOf(0x0a, end + 1) !== -1) {
        throw new Error(`state journal ${path} is corrupt at byte ${start}; restore it or remove the state folder`);
      }
      break;
    }
    if (record.seq > afterSeq) apply(record);
    start = end + 1;
  }
  return { validBytes: start, totalBytes: data.length };
}

function parseRecord(line: string): JournalRecord | undefined {
  try {
    const record = JSON.parse(line) as Partial<JournalRecord> | null;
    return typeof record?.seq === "number" ? (record as JournalRecord) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Creates the lock file holding this process's pid. A lock left by a dead process is taken
 * over; one held by a live process (this one included) refuses the open.
 */
async function acquireLock(path: string): Promise<void> {
  if (await createLockFile(path)) return;
  const holder = await readFile(path, "utf8").catch(() => "");
  const pid = Number.parseInt(holder, 10);
  if (Number.isInteger(pid) && pid > 0 && processExists(pid)) throw lockedError(path, holder);
  // Stale: its process is gone. Two processes taking over the same stale lock at once could
  // both win; the embedded store serves one machine and one operator, so that is not guarded.
  await unlink(path).catch((error: unknown) => {
    if (!isErrorCode(error, "ENOENT")) throw error;
  });
  if (!(await createLockFile(path))) throw lockedError(path, await readFile(path, "utf8").catch(() => ""));
}

async function createLockFile(path: string): Promise<boolean> {
  try {
    await writeFile(path, String(process.pid), { flag: "wx" });
    return true;
  } catch (error) {
    if (isErrorCode(error, "EEXIST")) return false;
    throw error;
  }
}

function lockedError(path: string, holder: string): Error {
  return new Error(
    `the embedded state at ${path} is in use by process ${holder.trim() || "?"}: ` +
      "stop that core, or remove the lock file if no such process runs",
  );
}

async function releaseLock(path: string): Promise<void> {
  const holder = await readFile(path, "utf8").catch(() => "");
  if (holder === String(process.pid)) await unlink(path).catch(() => undefined);
}

async function writeDurably(path: string, text: string): Promise<void> {
  const file = await open(path, "w");
  try {
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** Makes a rename in `dir` durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** An error's message, which for a system error names the errno (`ENOSPC: no space left on device, write`). */
function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isErrorCode(error: unknown, code: string): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === code;
}
