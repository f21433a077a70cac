import type { Logger } from "pino";
import type { Versioned } from "../model.js";
import type { Orchestrator } from "../orchestrator/orchestrator.js";
import { createPeriodic } from "../periodic.js";
import type { Replicas } from "../replicas.js";
import type { ReplLifecycle } from "./lifecycle.js";
import type { StoredRepl } from "./repository.js";
import { runnerStates, transitionalStates } from "./state-machine.js";

/** Options for {@link createReconciler}. */
export interface ReconcilerOptions {
  lifecycle: ReplLifecycle;
  orchestrator: Orchestrator;
  /**
   * A starting, stopping or deleting repl whose transition began longer ago than this, in ms, is
   * retried (config `--stuck-transition-ms`); one the lifecycle knows was given up, at once.
   */
  stuckAfterMs: number;
  /**
   * The core replicas (replicas.ts): this one acts only on repls it owns, or claims from a
   * replica whose lease ran out. None: a single core that owns everything.
   */
  replicas?: Pick<Replicas, "coreId" | "alive">;
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
  /** Repls claimed from a replica whose lease ran out. */
  claimed: string[];
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
  const { lifecycle, orchestrator, stuckAfterMs, replicas, logger } = options;
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

  /**
   * Whether this replica may act on the repl: it owns it, nobody does, or its owner's lease ran
   * out (then the repl is claimed first, and `repl` is the claimed record to act on). `leases`
   * holds the answers of this pass, so that each owner's lease is read once per pass.
   */
  const ownership = async (
    repl: Versioned<StoredRepl>,
    leases: Map<string, Promise<boolean>>,
  ): Promise<{ mine: false } | { mine: true; repl: Versioned<StoredRepl>; claimed: boolean }> => {
    const owner = repl.record.ownerCoreId;
    if (!replicas || !owner || owner === replicas.coreId) return { mine: true, repl, claimed: false };
    let alive = leases.get(owner);
    if (!alive) {
      alive = replicas.alive(owner);
      leases.set(owner, alive);
    }
    if (await alive) return { mine: false };
    const claimed = await lifecycle.claim(repl);
    if (!claimed) return { mine: false };
    logger?.info(
      { replId: repl.record.id, from: owner, state: repl.record.state },
      "claimed a repl of a core replica that is gone",
    );
    return { mine: true, repl: claimed, claimed: true };
  };

  const runOnce = async (): Promise<ReconcileReport> => {
    const report: ReconcileReport = { orphansStopped: [], lostRunners: [], stuckRetried: [], claimed: [], errors: [] };
    const leases = new Map<string, Promise<boolean>>();
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
        // A record explains the runner while the repl holds one, and it is the one the record
        // names (a starting repl names none yet). Read twice: a start may have begun since.
        const explained = (repl: Versioned<StoredRepl> | undefined) =>
          repl !== undefined &&
          runnerStates.has(repl.record.state) &&
          (repl.record.runnerId === undefined || repl.record.runnerId === runner.id);
        if (explained(await repository.get(runner.replId))) return;
        const latest = await repository.get(runner.replId);
        if (explained(latest)) return;
        // Another live replica's repl: its own reconciler removes what its transitions left.
        if (latest && !(await ownership(latest, leases)).mine) return;
        await orchestrator.stop(runner.replId, 0, { runnerId: runner.id });
        report.orphansStopped.push(runner.replId);
        logger?.info({ replId: runner.replId, state: latest?.record.state ?? "none" }, "stopped an orphan runner");
      });
    }

    const atMs = now();
    for await (const listed of repository.all()) {
      const { id, state } = listed.record;
      await attempt(report, id, async () => {
        if (state !== "running" && !transitionalStates.has(state)) return;
        const owned = await ownership(listed, leases);
        if (!owned.mine) return;
        const { repl } = owned;
        if (owned.claimed) report.claimed.push(id);
        if (state === "running") {
          // The listing may predate this repl's start: ask about this one runner before failing it.
          const runner = await orchestrator.get(id);
          const { runnerId } = repl.record;
          const live = runner !== undefined && runner.phase !== "exited";
          if (live && (runnerId === undefined || runner.id === runnerId)) return;
          const detail = live
            ? `the runner there (${runner.id}) is not the one it started (${runnerId})`
            : (runner?.detail ?? "the orchestrator has no runner for it");
          if (await lifecycle.markRunnerLost(repl, detail)) {
            report.lostRunners.push(id);
            logger?.warn({ replId: id, detail }, "runner lost; repl failed");
          }
          return;
        }
        // A transition claimed from a replica that is gone has nobody left to finish it: at once.
        const sinceMs = repl.record.transitionAtMs ?? repl.record.updatedAtMs;
        if (atMs - sinceMs <= stuckAfterMs && !lifecycle.abandoned(repl) && !owned.claimed) return;
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
