import type { Logger } from "pino";
import type { RunnerProcess } from "./runner-process.js";
import type { Sandbox } from "./sandbox/index.js";

/** A runner started with `--standby` in a sandbox of its own, not yet assigned a repl. */
export interface Standby {
  sandbox: Sandbox;
  runner: RunnerProcess;
  startedAtMs: number;
  /** Set once it logged `standby`: warmed up and serving RunnerService.Assign on its socket. */
  ready: boolean;
}

/** Options for {@link createStandbyPool}. */
export interface StandbyPoolOptions {
  /** How many standbys to keep ready. */
  target: number;
  /** Creates a sandbox and starts a standby runner in it. */
  launch(): Promise<{ sandbox: Sandbox; runner: RunnerProcess }>;
  logger: Logger;
}

/** Standby runners kept started ahead of need. */
export interface StandbyPool {
  /** A warmed-up standby, out of the pool, or undefined if none is ready; its replacement follows. */
  take(): Standby | undefined;
  /** Sandbox ids of the standbys in the pool (the reconciler leaves them alone). */
  ids(): Set<string>;
  /** Stops refilling and tears every standby down. */
  close(): Promise<void>;
}

/**
 * How long after a standby was taken its replacement is started: booting one costs a
 * few hundred ms of CPU, which should not compete with the new repl's first requests.
 */
const refillDelayMs = 250;
/** The first delay before replacing a standby that died; doubled for each death in a row. */
const retryMs = 500;
/** The longest delay before replacing a standby that died. */
const maxRetryMs = 60_000;
/** A standby that lived this long before dying starts a new count of deaths in a row. */
const healthyMs = 60_000;

/**
 * The standby pool: `target` runners, each booted and warmed up in its own sandbox, so a
 * start hands one its repl (RunnerService.Assign on its socket) instead of waiting for a
 * process to boot. A standby holds no user data; one left behind by a core that died is
 * found by the next core as a sandbox no record explains, and removed.
 */
export function createStandbyPool(options: StandbyPoolOptions): StandbyPool {
  const { logger } = options;
  const target = Math.max(0, Math.floor(options.target));
  const standbys = new Set<Standby>();
  let starting = 0;
  /** Standbys that died in a row without being taken: the replacement backs off. */
  let deaths = 0;
  let refillTimer: NodeJS.Timeout | undefined;
  let closed = false;

  const scheduleRefill = (delayMs: number) => {
    if (closed || standbys.size + starting >= target || refillTimer) return;
    refillTimer = setTimeout(() => {
      refillTimer = undefined;
      while (!closed && standbys.size + starting < target) void startOne();
    }, delayMs);
    refillTimer.unref();
  };

  const startOne = async () => {
    starting++;
    let launched: { sandbox: Sandbox; runner: RunnerProcess };
    try {
      launched = await options.launch();
    } catch (error) {
      logger.warn({ err: error }, "could not start a standby runner");
      deaths++;
      scheduleRefill(Math.min(retryMs * 2 ** (deaths - 1), maxRetryMs));
      return;
    } finally {
      starting--;
    }
    const standby: Standby = { ...launched, startedAtMs: Date.now(), ready: false };
    if (closed) {
      await standby.sandbox.destroy();
      return;
    }
    standbys.add(standby);
    standby.runner.waitFor("standby").then(
      () => {
        standby.ready = true;
        logger.info({ sandboxId: standby.sandbox.id }, "standby ready");
      },
      () => {},
    );
    void standby.runner.exited.then(async (detail) => {
      // A taken standby left the pool: its exit is its repl runner's.
      if (!standbys.delete(standby)) return;
      await standby.sandbox.destroy().catch((error: unknown) => {
        logger.warn({ err: error, sandboxId: standby.sandbox.id }, "could not remove a dead standby's sandbox");
      });
      if (closed) return;
      if (Date.now() - standby.startedAtMs > healthyMs) deaths = 0;
      deaths++;
      const retryInMs = Math.min(retryMs * 2 ** (deaths - 1), maxRetryMs);
      logger.warn(
        { detail, retryInMs, sandboxId: standby.sandbox.id, lastOutput: standby.runner.tail.slice(-10).join("\n") },
        "a standby runner exited",
      );
      scheduleRefill(retryInMs);
    });
  };

  scheduleRefill(0);

  return {
    take() {
      for (const standby of standbys) {
        const { child } = standby.runner;
        if (!standby.ready || child.exitCode !== null || child.signalCode !== null) continue;
        standbys.delete(standby);
        deaths = 0;
        scheduleRefill(refillDelayMs);
        return standby;
      }
      return undefined;
    },
    ids: () => new Set([...standbys].map((standby) => standby.sandbox.id)),
    async close() {
      closed = true;
      clearTimeout(refillTimer);
      const all = [...standbys];
      standbys.clear();
      await Promise.allSettled(all.map((standby) => standby.sandbox.destroy()));
    },
  };
}
