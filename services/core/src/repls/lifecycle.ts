import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { failpoint } from "../failpoints.js";
import type { ReplRecord, ReplStateName, StopReason, Versioned } from "../model.js";
import {
  defaultRunnerResources,
  type Orchestrator,
  type RunnerInstance,
  type RunnerSpec,
} from "../orchestrator/orchestrator.js";
import type { RunnerTarget } from "../orchestrator/runner-client.js";
import { type ReplRepository, replNotFound, type StoredRepl, versionMismatch } from "./repository.js";

/**
 * Saves a repl's workspace before its runner is torn down; returns the new snapshot's id, if
 * the driver keeps snapshots. Throwing keeps the runner: the repl goes back to running.
 */
export type SaveWorkspace = (repl: ReplRecord, reason: StopReason) => Promise<string | undefined>;

/**
 * Brings a repl's current snapshot into its new runner before the start completes. Throwing
 * fails the start (DataLoss is kept as the start's error code: the snapshot is damaged).
 */
export type RestoreWorkspace = (repl: ReplRecord, runner: RunnerTarget, signal: AbortSignal) => Promise<void>;

/** Removes everything a deleted repl stored (its snapshots); throwing keeps the repl deleting, to be retried. */
export type RemoveReplData = (replId: string) => Promise<void>;

/** Options for {@link createReplLifecycle}. */
export interface ReplLifecycleOptions {
  orchestrator: Orchestrator;
  /** The repository (createReplRepository). */
  repository: ReplRepository;
  /** How long a runner may take to become healthy before the start fails, in ms (config startTimeoutMs). */
  startTimeoutMs: number;
  /** How long a stopping runner gets to shut down gracefully before it is forced, in ms. Default 10000. */
  stopGraceMs?: number;
  /** The save hook called before a runner is torn down; none means nothing is saved. */
  saveWorkspace?: SaveWorkspace;
  /** The restore hook called once a new runner is healthy; none means the workspace starts as it is. */
  restoreWorkspace?: RestoreWorkspace;
  /** Called when a deletion has removed the runner and the workspace, before the record goes. */
  removeData?: RemoveReplData;
  /**
   * Called once a start has committed running (the template's start command, say). Awaited, but
   * a failure is only logged: the repl is running either way.
   */
  onRunning?: (repl: StoredRepl, runner: RunnerTarget) => Promise<void>;
  /**
   * Describes the runner a repl starts with (its template's image, resources, ports). Default:
   * the template name and {@link defaultRunnerResources}.
   */
  describeRunner?: (repl: StoredRepl, signal: AbortSignal) => Promise<RunnerSpec>;
  logger?: Logger;
  /**
   * This core replica's id (replicas.ts): written as the owner of every transition it commits
   * and of the runner it starts. Default "" (a single core: no owner is recorded).
   */
  coreId?: string;
  /** Reads the time; tests move it. Default `Date.now`. */
  now?: () => number;
}

/** The outcome of a stop. */
export interface StopOutcome {
  repl: Versioned<StoredRepl>;
  /** The snapshot the save hook reported, when this call saved one. */
  snapshotId?: string;
}

/** Options for {@link ReplLifecycle.start}. */
export interface StartOptions {
  /** The caller's expected_version; 0 or unset means no check. */
  expectedVersion?: number;
  /** The caller's signal: ends the wait, never the start itself (it completes in the background). */
  signal?: AbortSignal;
}

/** Options for {@link ReplLifecycle.stop}. */
export interface StopOptions {
  reason: StopReason;
  /** The caller's expected_version; 0 or unset means no check. */
  expectedVersion?: number;
  /** The caller's signal: ends the wait, never the stop itself. */
  signal?: AbortSignal;
  /**
   * Tear the runner down at once without saving, from any state but deleting, taking over a
   * start or a stop in progress (AdminService.ForceStopRepl skip_save). Loses unsaved changes.
   */
  skipSave?: boolean;
}

/** Options for {@link ReplLifecycle.delete}. */
export interface DeleteOptions {
  /** The caller's expected_version; 0 or unset means no check. */
  expectedVersion?: number;
  /** The caller's signal: ends the wait, never the deletion itself. */
  signal?: AbortSignal;
}

/**
 * The repl lifecycle: start, stop and delete as idempotent transitions over the versioned
 * record. A transition is owned by the caller whose commit into starting, stopping or deleting
 * won; everyone else waits for its outcome. The work runs detached from the caller's signal,
 * so a caller that gives up never leaves a transition half done.
 */
export interface ReplLifecycle {
  readonly repository: ReplRepository;
  /** Starts a repl (created, stopped or failed → starting → running); returns it running. */
  start(replId: string, options?: StartOptions): Promise<Versioned<StoredRepl>>;
  /** Stops a repl (running → stopping → save → teardown → stopped); a repl without a runner is returned unchanged. */
  stop(replId: string, options: StopOptions): Promise<StopOutcome>;
  /** Deletes a repl (→ deleting → runner stopped, workspace removed, record removed). False when it did not exist. */
  delete(replId: string, options?: DeleteOptions): Promise<boolean>;
  /**
   * For the reconciler: a transition older than its threshold is taken over (only if the record
   * is still at the version read): a start is failed and its runner removed, a stop is finished
   * (saving first when a runner is still there), a deletion is finished.
   */
  recoverStuck(repl: Versioned<StoredRepl>): Promise<void>;
  /** For the reconciler: a running repl whose runner is gone becomes failed (if still at the version read). */
  markRunnerLost(repl: Versioned<StoredRepl>, detail: string): Promise<boolean>;
  /**
   * Whether the repl is in a start or stop this process worked on and gave up without recording
   * its outcome (the store failed): it has no worker left, so a caller waiting for it and the
   * reconciler take it over at once instead of after the stuck threshold.
   */
  abandoned(repl: Versioned<StoredRepl>): boolean;
  /**
   * For the reconciler: makes this replica the repl's owner, if the record is still at the
   * version read (its owner's lease ran out); the claimed record, or undefined if it moved.
   */
  claim(repl: Versioned<StoredRepl>): Promise<Versioned<StoredRepl> | undefined>;
  /**
   * Stops every repl that holds a runner, saving each (core shutting down in local mode, where
   * runners end with core). Failures are logged, not thrown: a repl whose save fails stays running.
   */
  stopAll(reason: StopReason): Promise<void>;
}

const startable: ReadonlySet<ReplStateName> = new Set(["created", "stopped", "failed"]);

/** Whether `current` is still in the transition `transitionId` committed. */
function owns(current: Versioned<StoredRepl>, state: ReplStateName, transitionId: string): boolean {
  return current.record.state === state && current.record.transitionId === transitionId;
}

/** The record with the transition bookkeeping cleared. */
function settled(record: StoredRepl): StoredRepl {
  const { transitionId: _id, transitionAtMs: _at, ...rest } = record;
  return rest;
}

/** The record without the endpoint of a runner it no longer has. */
function withoutEndpoint(record: StoredRepl): StoredRepl {
  const { runnerEndpoint: _endpoint, previewEndpoint: _preview, runnerId: _runner, ...rest } = record;
  return rest;
}

function message(error: unknown): string {
  return error instanceof ConnectError ? error.rawMessage : error instanceof Error ? error.message : String(error);
}

/**
 * Waits for `work` until `signal` aborts; the work itself goes on (its failure is then only
 * logged by whoever owns it).
 */
async function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  work.catch(() => {});
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      const reason: unknown = signal.reason;
      reject(
        reason instanceof ConnectError
          ? reason
          : new ConnectError("the call ended; the operation goes on in the background", Code.Canceled),
      );
    };
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Creates the lifecycle over a repository and an orchestrator. */
export function createReplLifecycle(options: ReplLifecycleOptions): ReplLifecycle {
  const { orchestrator, repository, startTimeoutMs, saveWorkspace, restoreWorkspace, removeData, logger } = options;
  const now = options.now ?? Date.now;
  const stopGraceMs = options.stopGraceMs ?? 10_000;
  /** The owner field every commit of a transition writes. */
  const owner: Pick<StoredRepl, "ownerCoreId"> = options.coreId ? { ownerCoreId: options.coreId } : {};
  /** Starts in progress in this process, so a force stop can abort them at once. */
  const starts = new Map<string, { transitionId: string; controller: AbortController }>();
  /** Deletions in progress in this process: concurrent deletes share one. */
  const deletions = new Map<string, Promise<void>>();
  /** Starts and stops this process worked on and ended, by transition id, oldest first (the last 1000). */
  const ended = new Set<string>();
  const endTransition = (transitionId: string) => {
    ended.add(transitionId);
    if (ended.size > 1000) ended.delete(ended.values().next().value as string);
  };

  const read = async (replId: string, expectedVersion: number | undefined) => {
    const current = await repository.get(replId);
    if (!current) throw replNotFound(replId);
    if (expectedVersion && current.version !== expectedVersion) {
      throw versionMismatch(replId, expectedVersion, current.version);
    }
    return current;
  };

  const deletingError = (replId: string) =>
    new ConnectError(`repl ${replId} is being deleted`, Code.FailedPrecondition);

  const stopRunner = async (replId: string, graceMs: number, runnerId?: string) => {
    try {
      await orchestrator.stop(replId, graceMs, runnerId === undefined ? {} : { runnerId });
    } catch (error) {
      logger?.warn({ err: error, replId }, "could not stop a runner; the reconciler retries");
      throw new ConnectError(
        `could not stop the runner of repl ${replId}: ${message(error)}; it will be retried`,
        Code.Unavailable,
        undefined,
        undefined,
        error,
      );
    }
  };

  /** The owner of a starting transition: launches the runner and commits running, or failed. */
  const runStart = async (repl: Versioned<StoredRepl>, transitionId: string): Promise<Versioned<StoredRepl>> => {
    const { id: replId, ownerUserId, templateName } = repl.record;
    const controller = new AbortController();
    starts.set(replId, { transitionId, controller });
    let instance: RunnerInstance | undefined;
    try {
      let endpoint: string;
      let runnerId: string;
      let previewEndpoint: string | undefined;
      try {
        const spec: RunnerSpec = options.describeRunner
          ? await options.describeRunner(repl.record, controller.signal)
          : { replId, userId: ownerUserId, templateName, resources: defaultRunnerResources };
        instance = await orchestrator.start(spec, controller.signal);
        const ready = await orchestrator.waitReady(replId, startTimeoutMs, controller.signal);
        endpoint = ready.endpoint;
        runnerId = ready.id;
        previewEndpoint = ready.previewEndpoint || undefined;
        await restoreWorkspace?.(repl.record, { replId, endpoint }, controller.signal);
        failpoint("start-ready");
      } catch (error) {
        throw await failStart(replId, transitionId, error, instance);
      }
      const atMs = now();
      const result = await repository.update(replId, (current) =>
        owns(current, "starting", transitionId)
          ? {
              ...settled(current.record),
              state: "running",
              failureReason: "",
              runnerEndpoint: endpoint,
              runnerId,
              ...(previewEndpoint ? { previewEndpoint } : {}),
              lastStartedAtMs: atMs,
              lastActiveAtMs: atMs,
            }
          : undefined,
      );
      if (result.changed) {
        await options.onRunning?.(result.repl.record, { replId, endpoint }).catch((error: unknown) => {
          logger?.warn({ err: error, replId }, "a repl started, but what runs after its start failed");
        });
        return result.repl;
      }
      throw await startSuperseded(replId, instance);
    } finally {
      if (starts.get(replId)?.transitionId === transitionId) starts.delete(replId);
      endTransition(transitionId);
    }
  };

  /** A start failed: its runner is torn down, then the repl becomes failed (if the start is still its own). */
  const failStart = async (
    replId: string,
    transitionId: string,
    cause: unknown,
    instance?: RunnerInstance,
  ): Promise<ConnectError> => {
    const current = await repository.get(replId);
    if (!current || !owns(current, "starting", transitionId)) return startSuperseded(replId, instance);
    const damaged = cause instanceof ConnectError && cause.code === Code.DataLoss;
    const reason = damaged ? message(cause) : `runner did not start: ${message(cause)}`;
    logger?.warn({ err: cause, replId }, "repl start failed");
    await orchestrator.stop(replId, 0, instance ? { runnerId: instance.id } : {}).catch((error: unknown) => {
      logger?.warn({ err: error, replId }, "could not remove a failed runner; the reconciler retries");
    });
    await repository.update(replId, (latest) =>
      owns(latest, "starting", transitionId)
        ? { ...withoutEndpoint(settled(latest.record)), state: "failed", failureReason: reason }
        : undefined,
    );
    return new ConnectError(
      `repl ${replId} failed to start: ${message(cause)}`,
      damaged ? Code.DataLoss : Code.Unavailable,
      undefined,
      undefined,
      cause,
    );
  };

  /**
   * Another worker took the start over (a force stop, the reconciler). The runner this start
   * launched is removed, unless the repl is meant to have one again or the runner there now is
   * another (a newer start's): the reconciler removes anything left.
   */
  const startSuperseded = async (replId: string, instance: RunnerInstance | undefined): Promise<ConnectError> => {
    const current = await repository.get(replId);
    const state = current?.record.state ?? "deleted";
    if (instance && state !== "starting" && state !== "running") {
      const runner = await orchestrator.get(replId);
      if (runner?.id === instance.id) {
        await orchestrator.stop(replId, 0, { runnerId: instance.id }).catch((error: unknown) => {
          logger?.warn({ err: error, replId }, "could not remove the runner of a superseded start");
        });
      }
    }
    return new ConnectError(`the start of repl ${replId} was superseded; it is now ${state}`, Code.Aborted);
  };

  /** The owner of a stopping transition: saves (unless told not to), tears the runner down, commits stopped. */
  const runStop = async (
    repl: Versioned<StoredRepl>,
    transitionId: string,
    stop: { save: boolean; reason: StopReason; graceMs: number },
  ): Promise<StopOutcome> => {
    const replId = repl.record.id;
    let snapshotId: string | undefined;
    if (stop.save && saveWorkspace) {
      try {
        snapshotId = await saveWorkspace(repl.record, stop.reason);
      } catch (error) {
        logger?.warn({ err: error, replId }, "saving the workspace failed; the repl keeps running");
        await repository.update(replId, (current) =>
          owns(current, "stopping", transitionId) ? { ...settled(current.record), state: "running" } : undefined,
        );
        throw new ConnectError(
          `saving repl ${replId} failed, so it was not stopped and is still running: ${message(error)}`,
          Code.Unavailable,
          undefined,
          undefined,
          error,
        );
      }
    }
    failpoint("stop-saved");
    await stopRunner(replId, stop.graceMs, repl.record.runnerId);
    if (snapshotId !== undefined && restoreWorkspace) {
      // The snapshot holds the workspace now and the next start restores it: the sandbox's copy goes.
      await orchestrator.removeWorkspace(replId).catch((error: unknown) => {
        logger?.warn({ err: error, replId }, "could not remove a stopped repl's workspace folder");
      });
    }
    const atMs = now();
    const result = await repository.update(replId, (current) => {
      if (!owns(current, "stopping", transitionId)) return undefined;
      const record = withoutEndpoint(settled(current.record));
      return {
        ...record,
        state: "stopped",
        lastStoppedAtMs: atMs,
        currentSnapshotId: snapshotId ?? record.currentSnapshotId,
      };
    });
    if (result.changed) return { repl: result.repl, ...(snapshotId === undefined ? {} : { snapshotId }) };
    // Another stop took over (a force stop, the reconciler): its outcome is this stop's outcome.
    let latest: Versioned<StoredRepl> | undefined = result.repl;
    while (latest?.record.state === "stopping") latest = await repository.waitForChange(replId, latest.version);
    if (latest && (latest.record.stopCount ?? 0) > (repl.record.stopCount ?? 0)) return { repl: latest };
    throw new ConnectError(
      `the stop of repl ${replId} was superseded; it is now ${latest?.record.state ?? "deleted"}`,
      Code.Aborted,
    );
  };

  /** Finishes a deletion: runner (no save: the data goes), workspace, then every key. Shared in-process. */
  const finishDelete = (replId: string): Promise<void> => {
    const running = deletions.get(replId);
    if (running) return running;
    const work = (async () => {
      starts.get(replId)?.controller.abort(new Error("the repl is being deleted"));
      await stopRunner(replId, 0);
      try {
        await orchestrator.removeWorkspace(replId);
      } catch (error) {
        throw new ConnectError(
          `could not remove the workspace of repl ${replId}: ${message(error)}; deletion will be retried`,
          Code.Unavailable,
          undefined,
          undefined,
          error,
        );
      }
      if (removeData) {
        try {
          await removeData(replId);
        } catch (error) {
          throw new ConnectError(
            `could not remove the stored data of repl ${replId}: ${message(error)}; deletion will be retried`,
            Code.Unavailable,
            undefined,
            undefined,
            error,
          );
        }
      }
      await repository.remove(replId);
    })().finally(() => deletions.delete(replId));
    deletions.set(replId, work);
    return work;
  };

  /** Commits `state` with a new transition id if the repl is still at `version`; the id, or undefined if it moved. */
  const takeOver = async (
    repl: Versioned<StoredRepl>,
    change: (record: StoredRepl) => StoredRepl,
  ): Promise<{ repl: Versioned<StoredRepl>; transitionId: string } | undefined> => {
    const transitionId = randomUUID();
    const result = await repository.update(repl.record.id, (current) =>
      current.version === repl.version
        ? { ...change(current.record), ...owner, transitionId, transitionAtMs: now() }
        : undefined,
    );
    return result.changed ? { repl: result.repl, transitionId } : undefined;
  };

  const abandoned = ({ record }: Versioned<StoredRepl>): boolean =>
    record.transitionId !== undefined && ended.has(record.transitionId);

  /** Waits for the transition `current` is in to end; one given up in this process is taken over instead. */
  const awaitTransition = async (current: Versioned<StoredRepl>, signal: AbortSignal | undefined): Promise<void> => {
    if (abandoned(current)) await untilAborted(lifecycle.recoverStuck(current), signal);
    else await repository.waitForChange(current.record.id, current.version, signal);
  };

  const lifecycle: ReplLifecycle = {
    repository,

    async start(replId, startOptions = {}) {
      let expected = startOptions.expectedVersion;
      for (;;) {
        const current = await read(replId, expected);
        const { state } = current.record;
        if (state === "running") return current;
        if (state === "deleting") throw deletingError(replId);
        if (state === "starting" || state === "stopping") {
          expected = undefined;
          await awaitTransition(current, startOptions.signal);
          continue;
        }
        const transitionId = randomUUID();
        const result = await repository.update(
          replId,
          (latest) =>
            startable.has(latest.record.state)
              ? {
                  ...latest.record,
                  ...owner,
                  state: "starting",
                  failureReason: "",
                  transitionId,
                  transitionAtMs: now(),
                }
              : undefined,
          expected ? { expectedVersion: expected } : {},
        );
        expected = undefined;
        if (!result.changed) continue;
        return untilAborted(runStart(result.repl, transitionId), startOptions.signal);
      }
    },

    async stop(replId, stopOptions) {
      const { reason, skipSave = false, signal } = stopOptions;
      let expected = stopOptions.expectedVersion;
      for (;;) {
        const current = await read(replId, expected);
        const { state } = current.record;
        if (state === "created" || state === "stopped" || state === "failed") {
          // A failed repl holds no runner by definition; a force stop still removes a leftover one.
          if (skipSave && state === "failed") await stopRunner(replId, 0);
          return { repl: current };
        }
        if (state === "deleting") throw deletingError(replId);
        if ((state === "starting" || state === "stopping") && !skipSave) {
          expected = undefined;
          await awaitTransition(current, signal);
          continue;
        }
        const transitionId = randomUUID();
        const result = await repository.update(
          replId,
          (latest) => {
            const from = latest.record.state;
            if (from !== "running" && !(skipSave && (from === "starting" || from === "stopping"))) return undefined;
            return {
              ...latest.record,
              ...owner,
              state: "stopping",
              stopReason: reason,
              transitionId,
              transitionAtMs: now(),
            };
          },
          expected ? { expectedVersion: expected } : {},
        );
        expected = undefined;
        if (!result.changed) continue;
        if (skipSave) starts.get(replId)?.controller.abort(new Error("force stopped"));
        const work = runStop(result.repl, transitionId, {
          save: !skipSave,
          reason,
          graceMs: skipSave ? 0 : stopGraceMs,
        }).finally(() => endTransition(transitionId));
        return untilAborted(work, signal);
      }
    },

    async delete(replId, deleteOptions = {}) {
      const { signal } = deleteOptions;
      let expected = deleteOptions.expectedVersion;
      let seen = false;
      for (;;) {
        const current = await repository.get(replId);
        if (!current) return seen;
        seen = true;
        if (expected && current.version !== expected) throw versionMismatch(replId, expected, current.version);
        const { state } = current.record;
        // A start or a stop in progress is owned by its worker: let it finish (the reconciler ends stuck ones).
        if (state === "starting" || state === "stopping") {
          expected = undefined;
          await awaitTransition(current, signal);
          continue;
        }
        if (state !== "deleting") {
          const transitionId = randomUUID();
          const result = await repository.update(
            replId,
            (latest) =>
              latest.record.state === "starting" || latest.record.state === "stopping"
                ? undefined
                : { ...latest.record, ...owner, state: "deleting", transitionId, transitionAtMs: now() },
            expected ? { expectedVersion: expected } : {},
          );
          expected = undefined;
          if (!result.changed) continue;
        }
        await untilAborted(finishDelete(replId), signal);
        return true;
      }
    },

    async recoverStuck(repl) {
      const replId = repl.record.id;
      const { state } = repl.record;
      if (state === "deleting") {
        await finishDelete(replId);
        return;
      }
      if (state === "starting") {
        const owned = await takeOver(repl, (record) => record);
        if (!owned) return;
        starts.get(replId)?.controller.abort(new Error("start timed out"));
        const ageMs = now() - (repl.record.transitionAtMs ?? repl.record.updatedAtMs);
        const cause = abandoned(repl)
          ? new Error("the state store failed during the start")
          : new Error(`start did not complete within ${ageMs} ms`);
        await failStart(replId, owned.transitionId, cause).finally(() => endTransition(owned.transitionId));
        return;
      }
      if (state === "stopping") {
        const owned = await takeOver(repl, (record) => record);
        if (!owned) return;
        const runner = await orchestrator.get(replId);
        const reason = repl.record.stopReason ?? "system";
        await runStop(owned.repl, owned.transitionId, {
          save: runner !== undefined,
          reason,
          graceMs: stopGraceMs,
        }).finally(() => endTransition(owned.transitionId));
      }
    },

    async stopAll(reason) {
      const stops: Promise<unknown>[] = [];
      for await (const { record } of repository.all()) {
        if (record.state !== "starting" && record.state !== "running" && record.state !== "stopping") continue;
        stops.push(
          lifecycle.stop(record.id, { reason }).catch((error: unknown) => {
            logger?.warn({ err: error, replId: record.id }, "could not stop a repl");
          }),
        );
      }
      await Promise.all(stops);
    },

    abandoned,

    async markRunnerLost(repl, detail) {
      const result = await repository.update(repl.record.id, (current) =>
        current.version === repl.version && current.record.state === "running"
          ? { ...withoutEndpoint(settled(current.record)), state: "failed", failureReason: `runner lost: ${detail}` }
          : undefined,
      );
      if (result.changed) {
        // The orchestrator may still hold an exited instance; remove it so nothing lingers.
        const { runnerId } = repl.record;
        await orchestrator.stop(repl.record.id, 0, runnerId === undefined ? {} : { runnerId }).catch(() => {});
      }
      return result.changed;
    },

    async claim(repl) {
      const result = await repository.update(repl.record.id, (current) =>
        current.version === repl.version ? { ...current.record, ...owner } : undefined,
      );
      return result.changed ? result.repl : undefined;
    },
  };
  return lifecycle;
}
