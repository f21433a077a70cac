import type { Logger } from "pino";
import type { Orchestrator } from "../orchestrator/orchestrator.js";
import { createPeriodic } from "../periodic.js";
import type { ReplLifecycle } from "./lifecycle.js";
import { runnerStates, transitionalStates } from "./state-machine.js";

/** Options for {@link createReconciler}. */
export interface ReconcilerOptions {
  lifecycle: ReplLifecycle;
  orchestrator: Orchestrator;
  /** A starting, stopping or deleting repl whose transition began longer ago than this, in ms, is retried. */
  stuckAfterMs: number;
  logger?: Logger;
  /** Reads the time; tests move it. Default `Date.now`. */
  now?: () => number;
}

/** What one pass did, for logs and tests. */
export interface ReconcileReport {
  /** Runners stopped because no starting, running or stopping repl explains them. */
  orphansStopped: string[];
  /** Running repls whose runner was gone, now failed. */
  lostRunners: string[];
  /** Repls whose stuck transition was retried. */
  stuckRetried: string[];
  /** Repls or runners a step failed for (retried on the next pass). */
  errors: string[];
}

/** The reconciler: converges the records with the runners the orchestrator sees. */
export interface Reconciler {
  /** One pass; never throws (failures are logged, reported and retried next pass). */
  runOnce(): Promise<ReconcileReport>;
  /** A pass now (core start-up), then one every `intervalMs`; passes never overlap. */
  start(intervalMs: number): void;
  /** Stops the timer and waits for a pass in progress. */
  stop(): Promise<void>;
}

/**
 * Creates the reconciler. A running repl whose runner is gone becomes FAILED ("runner lost")
 * rather than being restarted: the changes since its last save are lost with the runner, and
 * the owner should learn that from the state, not find a silently reset workspace; a runner
 * that crashes on start would otherwise be restarted forever, and an unattended restart spends
 * resources on a repl nobody may be using. StartRepl from FAILED is one call away.
 */
export function createReconciler(options: ReconcilerOptions): Reconciler {
  const { lifecycle, orchestrator, stuckAfterMs, logger } = options;
  const { repository } = lifecycle;
  const now = options.now ?? Date.now;

  const attempt = async (report: ReconcileReport, id: string, step: () => Promise<void>) => {
    try {
      await step();
    } catch (error) {
      report.errors.push(id);
      logger?.warn({ err: error, replId: id }, "reconciler step failed; retried next pass");
    }
  };

  const runOnce = async (): Promise<ReconcileReport> => {
    const report: ReconcileReport = { orphansStopped: [], lostRunners: [], stuckRetried: [], errors: [] };
    let runners: Awaited<ReturnType<Orchestrator["list"]>>;
    try {
      runners = await orchestrator.list();
    } catch (error) {
      logger?.warn({ err: error }, "reconciler could not list runners");
      report.errors.push("orchestrator");
      return report;
    }

    for (const runner of runners) {
      await attempt(report, runner.replId, async () => {
        const repl = await repository.get(runner.replId);
        if (repl && runnerStates.has(repl.record.state)) return;
        // Read again right before acting: a start may have begun since.
        const latest = await repository.get(runner.replId);
        if (latest && runnerStates.has(latest.record.state)) return;
        await orchestrator.stop(runner.replId, 0);
        report.orphansStopped.push(runner.replId);
        logger?.info({ replId: runner.replId, state: latest?.record.state ?? "none" }, "stopped an orphan runner");
      });
    }

    const atMs = now();
    for await (const repl of repository.all()) {
      const { id, state } = repl.record;
      await attempt(report, id, async () => {
        if (state === "running") {
          // The listing may predate this repl's start: ask about this one runner before failing it.
          const runner = await orchestrator.get(id);
          if (runner && runner.phase !== "exited") return;
          const detail = runner?.detail ?? "the orchestrator has no runner for it";
          if (await lifecycle.markRunnerLost(repl, detail)) {
            report.lostRunners.push(id);
            logger?.warn({ replId: id, detail }, "runner lost; repl failed");
          }
          return;
        }
        if (!transitionalStates.has(state)) return;
        const sinceMs = repl.record.transitionAtMs ?? repl.record.updatedAtMs;
        if (atMs - sinceMs <= stuckAfterMs) return;
        logger?.warn({ replId: id, state, stuckMs: atMs - sinceMs }, "retrying a stuck transition");
        report.stuckRetried.push(id);
        await lifecycle.recoverStuck(repl);
      });
    }
    return report;
  };

  const periodic = createPeriodic(runOnce);

  return {
    runOnce,
    start: (intervalMs) => periodic.start(intervalMs, true),
    stop: () => periodic.stop(),
  };
}
