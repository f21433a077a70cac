import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { dependencyError } from "../errors.js";
import { failpoint } from "../failpoints.js";
import { newId } from "../ids.js";
import type { RunnerCaller, RunnerTarget } from "../orchestrator/runner-client.js";
import type { StateStore } from "../state/store.js";
import type { TemplateRecord } from "../templates/catalog.js";
import { listAll, WorkspaceObjectNotFoundError, type WorkspaceStore } from "../workspaces/store.js";
import {
  replObjectsPrefix,
  type SnapshotReasonName,
  type SnapshotRecord,
  snapshotArchiveKey,
  snapshotListKey,
  snapshotManifestKey,
  snapshotObjectsPrefix,
} from "./model.js";

/** Options for {@link createSnapshots}. */
export interface SnapshotsOptions {
  /** Where archives and manifests go. */
  objects: WorkspaceStore;
  /** Where each repl's list of snapshots is kept. */
  state: StateStore;
  runners: Pick<RunnerCaller, "exportWorkspace" | "importWorkspace" | "resume" | "shutdown" | "status">;
  /** How many snapshots of a repl are kept (the current one always is, on top). */
  retention: number;
  /** The workspace's ignore file, relative to its root (gitignore syntax). Default ".devexignore". */
  ignoreFile?: string;
  /** A save or restore fails when the runner sends nothing for this long, in ms. Default 60000. */
  stallTimeoutMs?: number;
  /**
   * Archives in a repl's snapshot folder that no snapshot lists, and uploads a crash cut short
   * there, are removed once this old, in ms. Default 3600000.
   */
  orphanAgeMs?: number;
  logger?: Logger;
  /** Reads the time; tests move it. Default `Date.now`. */
  now?: () => number;
}

/** Options for {@link Snapshots.save}. */
export interface SaveOptions {
  reason: Exclude<SnapshotReasonName, "template-seed" | "restore">;
  /**
   * Drain the runner first (RunnerService.Shutdown: sessions and processes end), so that the
   * archive is the workspace's final state. For stops. The store is checked for writes before
   * the drain; a save that fails after it resumes the runner (RunnerService.Resume) and calls
   * `onResumed` (the template's start command runs again), so the repl stays usable.
   */
  final?: { graceMs: number; onResumed?: () => Promise<void> };
  description?: string;
  /** The repl's current snapshot, kept by the pruning that follows the save. */
  currentSnapshotId: string;
  signal?: AbortSignal;
}

/** A repl's snapshots: saves, restores, history and retention. */
export interface Snapshots {
  /** A repl's snapshots, newest first (by id: ids sort by the time their save began). */
  list(replId: string): Promise<SnapshotRecord[]>;
  /** One snapshot of a repl, or undefined. */
  get(replId: string, snapshotId: string): Promise<SnapshotRecord | undefined>;
  /**
   * Seeds a new repl's first snapshot from a template's archive (copied, checked against the
   * template's checksum). The caller makes it current.
   */
  seed(replId: string, template: TemplateRecord): Promise<SnapshotRecord>;
  /**
   * Saves the workspace of the repl's runner as a new snapshot: the archive streams from the
   * runner to the store, its checksum is compared with the runner's, the manifest is written,
   * then the snapshot is listed. The caller commits the pointer. Saves of one repl never
   * overlap in this process: a second waits for the first. On failure nothing is listed and
   * the archive is removed.
   */
  save(replId: string, runner: RunnerTarget, options: SaveOptions): Promise<SnapshotRecord>;
  /**
   * Restores the snapshot into the repl's runner (RunnerService.ImportWorkspace, checked
   * against the recorded checksum). DataLoss when the archive is missing or damaged.
   */
  restoreInto(replId: string, snapshotId: string, runner: RunnerTarget, signal?: AbortSignal): Promise<void>;
  /**
   * Records a new snapshot (reason restore) holding exactly the tree of `snapshotId`: the
   * archive is copied and its checksum checked (DataLoss on a mismatch; nothing is listed).
   * The caller makes it current.
   */
  copyForRestore(replId: string, snapshotId: string, currentSnapshotId: string): Promise<SnapshotRecord>;
  /** Removes a snapshot that was never made current (a create or restore that did not commit). */
  discard(replId: string, snapshotId: string): Promise<void>;
  /**
   * Keeps the newest `retention` snapshots and the current one; deletes the rest, old orphans
   * and old uploads a crash left.
   */
  prune(replId: string, currentSnapshotId: string): Promise<void>;
  /** Deletes every object, every upload in progress and the list of a repl (repl deletion). */
  deleteAll(replId: string): Promise<void>;
}

const snapshotReasons: ReadonlySet<string> = new Set<SnapshotReasonName>([
  "stop",
  "idle-stop",
  "admin-stop",
  "system-stop",
  "manual",
  "template-seed",
  "restore",
]);
const maxCommitAttempts = 50;

/** How long the write check before a stop's drain may take, in ms. */
const writeCheckTimeoutMs = 15_000;

/** Creates the snapshot component over the workspace store, the state store and core's runner client. */
export function createSnapshots(options: SnapshotsOptions): Snapshots {
  const { objects, state, runners, logger } = options;
  const now = options.now ?? Date.now;
  const retention = Math.max(1, Math.floor(options.retention));
  const ignoreFile = options.ignoreFile ?? ".devexignore";
  const stallTimeoutMs = options.stallTimeoutMs ?? 60_000;
  const orphanAgeMs = options.orphanAgeMs ?? 3_600_000;
  /** The save in progress per repl, so the next one waits for it. */
  const saving = new Map<string, Promise<unknown>>();

  const readList = async (replId: string): Promise<{ snapshots: SnapshotRecord[]; version: number }> => {
    const stored = await state.get(snapshotListKey(replId));
    if (!stored) return { snapshots: [], version: 0 };
    const parsed: unknown = JSON.parse(stored.value);
    if (!Array.isArray(parsed)) throw new Error(`the snapshot list of ${replId} is not a list`);
    return { snapshots: parsed.filter(isSnapshotRecord), version: stored.version };
  };

  /** Read → change → commit at the version read, retried on conflicts. */
  const changeList = async (
    replId: string,
    change: (snapshots: SnapshotRecord[]) => SnapshotRecord[] | undefined,
  ): Promise<SnapshotRecord[]> => {
    for (let attempt = 0; attempt < maxCommitAttempts; attempt++) {
      const { snapshots, version } = await readList(replId);
      const next = change(snapshots);
      if (!next) return snapshots;
      const key = snapshotListKey(replId);
      const result = await state.commit(
        next.length > 0
          ? { checks: [{ key, version }], puts: [{ key, value: JSON.stringify(next) }] }
          : { checks: [{ key, version }], deletes: [key] },
      );
      if (result.ok) return next;
    }
    throw new ConnectError(`the snapshots of repl ${replId} are changing too often; try again`, Code.Aborted);
  };

  /** Adds a stored snapshot to the repl's list. */
  const list = (record: SnapshotRecord) =>
    changeList(record.replId, (snapshots) =>
      [record, ...snapshots.filter((s) => s.id !== record.id)].sort(newestFirst),
    );

  const removeObjects = async (replId: string, snapshotId: string) => {
    await objects.delete(snapshotArchiveKey(replId, snapshotId));
    await objects.delete(snapshotManifestKey(replId, snapshotId));
  };

  /** Stores the manifest, then lists the snapshot; on failure removes what was stored. */
  const record = async (snapshot: SnapshotRecord): Promise<SnapshotRecord> => {
    try {
      await objects.put(snapshotManifestKey(snapshot.replId, snapshot.id), Buffer.from(JSON.stringify(snapshot)));
      await list(snapshot);
      return snapshot;
    } catch (error) {
      await removeObjects(snapshot.replId, snapshot.id).catch((cleanup: unknown) => {
        logger?.warn({ err: cleanup, replId: snapshot.replId }, "could not remove an unlisted snapshot; pruning will");
      });
      throw storageError(`could not record snapshot ${snapshot.id}`, error);
    }
  };

  /** Copies an archive to a new snapshot key, checking it against its checksum; DataLoss on a mismatch. */
  const copyArchive = async (fromKey: string, expectedSha256: string, toKey: string, what: string) => {
    let body: AsyncIterable<Uint8Array>;
    try {
      body = await objects.get(fromKey);
    } catch (error) {
      if (error instanceof WorkspaceObjectNotFoundError) {
        throw new ConnectError(`the archive of ${what} is missing from the workspace store`, Code.DataLoss);
      }
      throw storageError(`could not read the archive of ${what}`, error);
    }
    let stored: { bytes: number; sha256: string };
    try {
      stored = await objects.put(toKey, body);
    } catch (error) {
      throw storageError(`could not copy the archive of ${what}`, error);
    }
    if (stored.sha256 !== expectedSha256) {
      await objects.delete(toKey).catch(() => {});
      throw new ConnectError(
        `the archive of ${what} is damaged: its checksum is ${stored.sha256}, not the recorded ${expectedSha256}`,
        Code.DataLoss,
      );
    }
    return stored;
  };

  /** Streams the runner's workspace into the store and records it as a new snapshot. */
  const archive = async (
    replId: string,
    runner: RunnerTarget,
    runnerVersion: string,
    saveOptions: SaveOptions,
  ): Promise<SnapshotRecord> => {
    const { signal } = saveOptions;
    const id = newId("snap", now());
    const archiveKey = snapshotArchiveKey(replId, id);
    const stall = new AbortController();
    const abort = signal ? AbortSignal.any([signal, stall.signal]) : stall.signal;
    const exported = runners.exportWorkspace(runner, { ignoreFile, signal: abort });
    let stored: { bytes: number; sha256: string };
    try {
      stored = await objects.put(archiveKey, stallGuard(exported.chunks, stallTimeoutMs, stall), { signal: abort });
    } catch (error) {
      await objects.delete(archiveKey).catch(() => {});
      throw storageError(`saving the workspace of repl ${replId} failed`, abort.aborted ? abort.reason : error);
    }
    const report = await exported.report.catch(async (error: unknown) => {
      await objects.delete(archiveKey).catch(() => {});
      throw storageError(`saving the workspace of repl ${replId} failed`, error);
    });
    if (report.sha256 !== stored.sha256 || report.archiveBytes !== stored.bytes) {
      await objects.delete(archiveKey).catch(() => {});
      throw new ConnectError(
        `the archive of repl ${replId} arrived damaged (${stored.bytes} bytes, sha256 ${stored.sha256}; ` +
          `the runner sent ${report.archiveBytes} bytes, sha256 ${report.sha256}); nothing was saved`,
        Code.DataLoss,
      );
    }
    const saved = await record({
      id,
      replId,
      reason: saveOptions.reason,
      startedAtMs: exported.startedAtMs() || now(),
      createdAtMs: now(),
      fileCount: report.fileCount,
      directoryCount: report.directoryCount,
      symlinkCount: report.symlinkCount,
      contentBytes: report.contentBytes,
      archiveBytes: stored.bytes,
      sha256: stored.sha256,
      runnerVersion,
      description: saveOptions.description ?? "",
      restoredFromSnapshotId: "",
      archiveKey,
      skippedCount: report.skippedCount,
      skipped: report.skipped,
    });
    await snapshots.prune(replId, saveOptions.currentSnapshotId).catch((error: unknown) => {
      logger?.warn({ err: error, replId }, "could not prune old snapshots; the next save retries");
    });
    return saved;
  };

  /**
   * Fails fast, before a stop drains the runner, when the store cannot take a write (down,
   * frozen, read-only): a small object is written and removed within {@link writeCheckTimeoutMs}.
   */
  const checkWritable = async (replId: string, signal: AbortSignal | undefined) => {
    const timeout = AbortSignal.timeout(writeCheckTimeoutMs);
    const key = `${replObjectsPrefix(replId)}write-check`;
    try {
      await objects.put(key, new Uint8Array(0), { signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
      await objects.delete(key);
    } catch (error) {
      const cause = timeout.aborted ? new Error(`no answer within ${writeCheckTimeoutMs} ms`) : error;
      throw storageError(`the workspace store cannot take the save of repl ${replId}`, cause);
    }
  };

  /**
   * A save that followed a drain failed: the runner is resumed (new work is accepted again, so
   * the repl that stays running is usable), `onResumed` runs, and the error says what the drain
   * ended. A runner that cannot be resumed is left to the reconciler.
   */
  const resumeAfterFailedSave = async (
    replId: string,
    runner: RunnerTarget,
    error: unknown,
    onResumed: (() => Promise<void>) | undefined,
  ): Promise<unknown> => {
    try {
      await runners.resume(runner, "saving the workspace failed; the repl keeps running");
    } catch (resumeError) {
      logger?.warn({ err: resumeError, replId }, "could not resume a runner after its save failed");
      return error;
    }
    await onResumed?.().catch((hookError: unknown) => {
      logger?.warn({ err: hookError, replId }, "a runner resumed, but what runs after a start failed");
    });
    if (!(error instanceof ConnectError)) return error;
    return new ConnectError(
      `${error.rawMessage} (the stop had already ended its terminals and processes; the runner takes work again)`,
      error.code,
      error.metadata,
      undefined,
      error,
    );
  };

  const serialized = async <T>(replId: string, work: () => Promise<T>): Promise<T> => {
    const before = saving.get(replId);
    const mine = (async () => {
      await before?.catch(() => {});
      return work();
    })();
    const settled = mine.catch(() => {});
    saving.set(replId, settled);
    try {
      return await mine;
    } finally {
      if (saving.get(replId) === settled) saving.delete(replId);
    }
  };

  const snapshots: Snapshots = {
    async list(replId) {
      return (await readList(replId)).snapshots;
    },

    async get(replId, snapshotId) {
      return (await readList(replId)).snapshots.find((snapshot) => snapshot.id === snapshotId);
    },

    async seed(replId, template) {
      const id = newId("snap", now());
      const startedAtMs = now();
      const archiveKey = snapshotArchiveKey(replId, id);
      const stored = await copyArchive(
        template.archive.key,
        template.archive.sha256,
        archiveKey,
        `template ${template.name}`,
      );
      return record({
        id,
        replId,
        reason: "template-seed",
        startedAtMs,
        createdAtMs: now(),
        fileCount: template.archive.fileCount,
        directoryCount: template.archive.directoryCount,
        symlinkCount: template.archive.symlinkCount,
        contentBytes: template.archive.contentBytes,
        archiveBytes: stored.bytes,
        sha256: stored.sha256,
        runnerVersion: "",
        description: "",
        restoredFromSnapshotId: "",
        archiveKey,
      });
    },

    save(replId, runner, saveOptions) {
      return serialized(replId, async () => {
        const { signal } = saveOptions;
        const status = await runners.status(runner, signal);
        const { final } = saveOptions;
        if (!final) return archive(replId, runner, status.version, saveOptions);
        // A store that cannot take the archive is found before the drain ends anything.
        await checkWritable(replId, signal);
        await runners.shutdown(runner, {
          graceMs: final.graceMs,
          reason: "the repl is stopping; its workspace is being saved",
          ...(signal ? { signal } : {}),
        });
        failpoint("stop-drained");
        try {
          return await archive(replId, runner, status.version, saveOptions);
        } catch (error) {
          throw await resumeAfterFailedSave(replId, runner, error, final.onResumed);
        }
      });
    },

    async restoreInto(replId, snapshotId, runner, signal) {
      const snapshot = await snapshots.get(replId, snapshotId);
      if (!snapshot) {
        throw new ConnectError(`snapshot ${snapshotId} of repl ${replId} is not in its history`, Code.DataLoss);
      }
      let body: AsyncIterable<Uint8Array>;
      try {
        body = await objects.get(snapshot.archiveKey, signal ? { signal } : {});
      } catch (error) {
        if (error instanceof WorkspaceObjectNotFoundError) {
          throw new ConnectError(
            `the archive of snapshot ${snapshotId} is missing from the workspace store`,
            Code.DataLoss,
          );
        }
        throw storageError(`could not read snapshot ${snapshotId}`, error);
      }
      const stall = new AbortController();
      const abort = signal ? AbortSignal.any([signal, stall.signal]) : stall.signal;
      try {
        await runners.importWorkspace(runner, stallGuard(body, stallTimeoutMs, stall), {
          sha256: snapshot.sha256,
          archiveBytes: snapshot.archiveBytes,
          signal: abort,
        });
      } catch (error) {
        if (error instanceof ConnectError && error.code === Code.DataLoss) {
          throw new ConnectError(
            `snapshot ${snapshotId} is damaged (${error.rawMessage}); restore an earlier one with RestoreSnapshot`,
            Code.DataLoss,
            undefined,
            undefined,
            error,
          );
        }
        throw storageError(`restoring snapshot ${snapshotId} failed`, abort.aborted ? abort.reason : error);
      }
    },

    async copyForRestore(replId, snapshotId, currentSnapshotId) {
      const source = await snapshots.get(replId, snapshotId);
      if (!source) throw new ConnectError(`snapshot ${snapshotId} of repl ${replId} not found`, Code.NotFound);
      const id = newId("snap", now());
      const startedAtMs = now();
      const archiveKey = snapshotArchiveKey(replId, id);
      const stored = await copyArchive(source.archiveKey, source.sha256, archiveKey, `snapshot ${snapshotId}`);
      const restored = await record({
        ...source,
        id,
        reason: "restore",
        startedAtMs,
        createdAtMs: now(),
        archiveBytes: stored.bytes,
        sha256: stored.sha256,
        runnerVersion: "",
        description: "",
        restoredFromSnapshotId: snapshotId,
        archiveKey,
      });
      await snapshots.prune(replId, currentSnapshotId).catch((error: unknown) => {
        logger?.warn({ err: error, replId }, "could not prune old snapshots; the next save retries");
      });
      return restored;
    },

    async discard(replId, snapshotId) {
      await changeList(replId, (list) =>
        list.some((s) => s.id === snapshotId) ? list.filter((s) => s.id !== snapshotId) : undefined,
      );
      await removeObjects(replId, snapshotId);
    },

    async prune(replId, currentSnapshotId) {
      let dropped: SnapshotRecord[] = [];
      const kept = await changeList(replId, (list) => {
        const keep = list.filter((snapshot, index) => index < retention || snapshot.id === currentSnapshotId);
        dropped = list.filter((snapshot) => !keep.includes(snapshot));
        return dropped.length > 0 ? keep : undefined;
      });
      for (const snapshot of dropped) await removeObjects(replId, snapshot.id);
      // Archives no listed snapshot claims: saves that failed before listing, or whose cleanup failed.
      const listed = new Set(kept.map((snapshot) => snapshot.id));
      const prefix = snapshotObjectsPrefix(replId);
      const cutoffMs = now() - orphanAgeMs;
      for await (const object of listAll(objects, prefix)) {
        const snapshotId = object.key.slice(prefix.length).replace(/\.(tar\.zst|json)$/, "");
        if (!listed.has(snapshotId) && object.modifiedAtMs < cutoffMs) await objects.delete(object.key);
      }
      // Uploads a crash cut short; a save in progress keeps its own fresh.
      await objects.abortUploads(replObjectsPrefix(replId), { startedBeforeMs: cutoffMs });
    },

    async deleteAll(replId) {
      try {
        await objects.deletePrefix(replObjectsPrefix(replId));
      } catch (error) {
        throw storageError(`could not delete the snapshots of repl ${replId}`, error);
      }
      await changeList(replId, (list) => (list.length > 0 ? [] : undefined));
    },
  };
  return snapshots;
}

/** Newest first: snapshot ids sort by the time their save began. */
function newestFirst(a: SnapshotRecord, b: SnapshotRecord): number {
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

function isSnapshotRecord(value: unknown): value is SnapshotRecord {
  if (typeof value !== "object" || value === null) return false;
  const record = value as Partial<SnapshotRecord>;
  return (
    typeof record.id === "string" &&
    typeof record.replId === "string" &&
    typeof record.archiveKey === "string" &&
    typeof record.sha256 === "string" &&
    typeof record.reason === "string" &&
    snapshotReasons.has(record.reason)
  );
}

/**
 * Passes chunks through, aborting `controller` when the source takes longer than `stallMs` to
 * produce the next one (time spent by the consumer does not count).
 */
async function* stallGuard(
  source: AsyncIterable<Uint8Array>,
  stallMs: number,
  controller: AbortController,
): AsyncGenerator<Uint8Array> {
  const iterator = source[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      const timer = setTimeout(
        () =>
          controller.abort(
            new ConnectError(
              `no workspace data arrived for ${stallMs} ms; the transfer was given up`,
              Code.Unavailable,
            ),
          ),
        stallMs,
      );
      let result: IteratorResult<Uint8Array>;
      try {
        result = await iterator.next();
      } finally {
        clearTimeout(timer);
      }
      if (result.done) {
        finished = true;
        return;
      }
      yield result.value;
    }
  } finally {
    if (!finished) await iterator.return?.();
  }
}

/**
 * The Connect error of a failed storage step: Unavailable for an outage (retry later), the
 * cause's own code for Connect errors (DataLoss, Aborted, ...), Internal otherwise.
 */
function storageError(what: string, cause: unknown): ConnectError {
  if (cause instanceof ConnectError) {
    if (cause.code === Code.Canceled || cause.code === Code.DeadlineExceeded || cause.code === Code.DataLoss) {
      return new ConnectError(`${what}: ${cause.rawMessage}`, cause.code, undefined, undefined, cause);
    }
    return new ConnectError(`${what}: ${cause.rawMessage}`, Code.Unavailable, undefined, undefined, cause);
  }
  const dependency = dependencyError(cause);
  if (dependency)
    return new ConnectError(`${what}: ${dependency.rawMessage}`, dependency.code, undefined, undefined, cause);
  const message = cause instanceof Error ? cause.message : String(cause);
  return new ConnectError(`${what}: ${message}`, Code.Unavailable, undefined, undefined, cause);
}
