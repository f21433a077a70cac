import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Orchestrator, RunnerInstance } from "../orchestrator/orchestrator.js";
import type { RunnerStatus } from "../orchestrator/runner-client.js";
import { createPeriodic } from "../periodic.js";
import type { ReplLifecycle } from "./lifecycle.js";

/** Asks a runner for its status (orchestrator/runner-client.ts implements it). */
export interface RunnerStatusSource {
  status(instance: RunnerInstance, signal?: AbortSignal): Promise<RunnerStatus>;
}

/** Options for {@link createIdleMonitor}. */
export interface IdleMonitorOptions {
  lifecycle: ReplLifecycle;
  orchestrator: Pick<Orchestrator, "get">;
  status: RunnerStatusSource;
  /** The idle timeout of repls that chose none, in ms (config idleTimeoutMs). */
  defaultIdleTimeoutMs: number;
  /** Activity is written to the store at most this often per repl, in ms. Default 30000. */
  activityWriteIntervalMs?: number;
  /** How long one status call may take, in ms. Default 5000. */
  statusTimeoutMs?: number;
  /** After this many status failures in a row a repl is logged at warn (the reconciler decides its fate). Default 3. */
  warnAfterFailures?: number;
  /**
   * This core replica's id: only the repls it owns (or that no core owns) are checked, so N
   * replicas do not ask every runner N times. Default: every running repl.
   */
  coreId?: string;
  logger?: Logger;
  /** Reads the time; tests move it. Default `Date.now`. */
  now?: () => number;
}

/** What one check did, for logs and tests. */
export interface IdleCheckReport {
  /** Running repls whose runner answered. */
  checked: string[];
  /** Repls stopped for being idle. */
  stopped: string[];
  /** Running repls whose runner did not answer (not idle by its own say: left to the reconciler). */
  unreachable: string[];
}

/** The idle monitor: stops running repls nobody has used for longer than their idle timeout. */
export interface IdleMonitor {
  /** One check of every running repl; never throws. */
  checkOnce(): Promise<IdleCheckReport>;
  /** A check every `intervalMs`; checks never overlap. */
  start(intervalMs: number): void;
  /** Stops the timer and waits for a check in progress. */
  stop(): Promise<void>;
  /** How many status calls in a row failed for a repl (0 after an answer). */
  consecutiveFailures(replId: string): number;
}

/**
 * Creates the idle monitor. A runner with an attached client, a running process or a busy
 * terminal session (its shell running a command in the foreground, client or not) counts as
 * active now; otherwise its reported last activity counts (never later than now). An idle repl
 * is stopped like StopRepl with reason idle: saved first, and left running if the save fails.
 * A repl kept awake by its owner (keep_awake) is never stopped; its activity is still recorded.
 */
export function createIdleMonitor(options: IdleMonitorOptions): IdleMonitor {
  const { lifecycle, orchestrator, status, defaultIdleTimeoutMs, logger } = options;
  const { repository } = lifecycle;
  const now = options.now ?? Date.now;
  const writeIntervalMs = options.activityWriteIntervalMs ?? 30_000;
  const statusTimeoutMs = options.statusTimeoutMs ?? 5_000;
  const warnAfterFailures = options.warnAfterFailures ?? 3;
  const failures = new Map<string, number>();

  const failed = (replId: string, report: IdleCheckReport, error: unknown) => {
    const count = (failures.get(replId) ?? 0) + 1;
    failures.set(replId, count);
    report.unreachable.push(replId);
    if (count >= warnAfterFailures) {
      logger?.warn({ err: error, replId, consecutiveFailures: count }, "runner does not answer status calls");
    }
  };

  const checkOnce = async (): Promise<IdleCheckReport> => {
    const report: IdleCheckReport = { checked: [], stopped: [], unreachable: [] };
    const stops: Promise<void>[] = [];
    const seen = new Set<string>();
    for await (const repl of repository.all()) {
      const { id, state, ownerCoreId } = repl.record;
      if (state !== "running") continue;
      // Another replica's repl: its idle monitor checks it (the reconciler claims it if that replica is gone).
      if (options.coreId && ownerCoreId && ownerCoreId !== options.coreId) continue;
      seen.add(id);
      try {
        const runner = await orchestrator.get(id);
        if (runner?.phase !== "ready") {
          failed(id, report, new Error(`runner is ${runner?.phase ?? "missing"}`));
          continue;
        }
        let answer: RunnerStatus;
        try {
          answer = await status.status(runner, AbortSignal.timeout(statusTimeoutMs));
        } catch (error) {
          failed(id, report, error);
          continue;
        }
        failures.delete(id);
        report.checked.push(id);
        const atMs = now();
        const busy = answer.attachedClients > 0 || answer.runningProcessCount > 0 || answer.busySessionCount > 0;
        const stored = repl.record.lastActiveAtMs ?? repl.record.lastStartedAtMs ?? 0;
        const lastActivityMs = Math.max(busy ? atMs : Math.min(answer.lastActivityAtMs, atMs), stored);
        if (lastActivityMs - stored >= writeIntervalMs) await repository.recordActivity(id, lastActivityMs);
        const idleTimeoutMs = repl.record.idleTimeoutMs || defaultIdleTimeoutMs;
        if (repl.record.keepAwake || atMs - lastActivityMs <= idleTimeoutMs) continue;
        logger?.info({ replId: id, idleMs: atMs - lastActivityMs, idleTimeoutMs }, "stopping an idle repl");
        stops.push(
          lifecycle
            // At the version read: a repl restarted or changed meanwhile is left alone.
            .stop(id, { reason: "idle", expectedVersion: repl.version })
            .then(() => {
              report.stopped.push(id);
            })
            .catch((error: unknown) => {
              if (error instanceof ConnectError && error.code === Code.FailedPrecondition) return;
              logger?.warn({ err: error, replId: id }, "could not stop an idle repl; it keeps running");
            }),
        );
      } catch (error) {
        logger?.warn({ err: error, replId: id }, "idle check failed");
      }
    }
    for (const replId of failures.keys()) if (!seen.has(replId)) failures.delete(replId);
    await Promise.all(stops);
    return report;
  };

  const periodic = createPeriodic(checkOnce);

  return {
    checkOnce,
    start: (intervalMs) => periodic.start(intervalMs),
    stop: () => periodic.stop(),
    consecutiveFailures: (replId) => failures.get(replId) ?? 0,
  };
}
