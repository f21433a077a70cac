import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { access, chmod, mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { basename, dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { unixEndpoint } from "@devex/kit";
import type { Logger } from "pino";
import { createEgressProxy, type EgressProxy } from "../../egress/index.js";
import { failpoint } from "../../failpoints.js";
import { currentProcess, processAlive } from "../../process-start.js";
import type { Orchestrator, RunnerInstance, RunnerPhase, RunnerSpec } from "../orchestrator.js";
import { createRunnerCaller, type RunnerCaller } from "../runner-client.js";
import type { TokenKeys } from "../token-keys.js";
import { checkReplId, createRunnerRecords } from "./records.js";
import {
  egressSocketName,
  launchRunner,
  previewSocketName,
  type RunnerLaunchOptions,
  type RunnerProcess,
  runnerSocketName,
} from "./runner-process.js";
import {
  closedAncestor,
  createSandboxDriver,
  newSandboxId,
  type Sandbox,
  type SandboxDriver,
} from "./sandbox/index.js";
import { createStandbyPool, type StandbyPool } from "./standby-pool.js";

/** Options for {@link createLocalOrchestrator}. */
export interface LocalOrchestratorOptions {
  /** Core's data directory: sandboxes and runner records live under it. */
  dataDir: string;
  /** The runner bundle (`runner/dist/main.js`, made by `npm run build`). */
  runnerEntry: string;
  tokenKeys: TokenKeys;
  logger: Logger;
  /** How each repl is confined: `bwrap` (default) or `none` (no isolation). */
  sandbox?: "bwrap" | "none";
  /**
   * Where sandboxes' folders live. Default `<dataDir>/sandboxes` (see {@link defaultSandboxRoot}
   * for the default core uses).
   */
  sandboxRoot?: string;
  /** A sandbox driver to use instead of the one `sandbox` names (tests). */
  sandboxDriver?: SandboxDriver;
  /** First host uid of the sandboxes' range. Default 200000. */
  sandboxUidBase?: number;
  /** Node flags of each runner process. Default `["--max-semi-space-size=1"]`. */
  nodeOptions?: string[];
  /** How long a runner may take to log that it listens before `start` gives up, in ms. Default 30000. */
  listenTimeoutMs?: number;
  /** The grace period of each runner when `close({ stopRunners: true })` stops them all, in ms. Default 5000. */
  closeGraceMs?: number;
  /**
   * Runners kept started ahead of need, each in its own sandbox (`--standby`: loaded and
   * warmed up, no repl yet), so that `start` hands one its repl instead of waiting for a
   * process to boot. Default 0: every start creates a sandbox and boots a runner.
   */
  standbyRunners?: number;
  /**
   * Outbound network of repls: `none` (default: loopback only) or `allowlist` (HTTP and
   * HTTPS through an egress proxy per sandbox that admits only `allowHosts`).
   */
  network?: { mode: "none" | "allowlist"; allowHosts: string[] };
}

/** A runner this orchestrator tracks: one it started, or one adopted from its record. */
interface Tracked {
  replId: string;
  userId: string;
  sandbox: Sandbox;
  pid: number;
  startedAtMs: number;
  phase: RunnerPhase;
  detail?: string;
  /** Set for runners this process started; adopted ones are watched by polling their sandbox. */
  runner?: RunnerProcess;
  /** Aborted once the runner is gone. */
  gone: AbortController;
  watcher?: NodeJS.Timeout;
  /** Set once this orchestrator let go of the process (closed without stopping it). */
  detached?: boolean;
}

/** How often a runner's process is checked for. */
const runnerPollMs = 1_000;
/** A record whose runner does not answer yet, younger than this, belongs to a runner that may still be starting. */
const startingRecordMs = 30_000;

/**
 * The local orchestration driver: one runner per running repl on this machine, each in a
 * sandbox of its own (see `sandbox/`) that it shares with nothing but the programs it
 * starts. Core reaches a runner only through the Unix sockets in its sandbox's run dir.
 * Runners are recorded under `<dataDir>/runners/` before they are spawned or handed their
 * repl, so a restarted core adopts the ones still running and removes what an interrupted
 * start left. A stopped repl's last workspace stays on disk until it starts again or is
 * deleted. With `standbyRunners`, a start takes a warmed-up standby when one is ready.
 */
export function createLocalOrchestrator(options: LocalOrchestratorOptions): Orchestrator {
  const dataDir = resolve(options.dataDir);
  const runnerEntry = resolve(options.runnerEntry);
  const listenTimeoutMs = options.listenTimeoutMs ?? 30_000;
  const closeGraceMs = options.closeGraceMs ?? 5_000;
  const logger = options.logger.child({ driver: "local" });
  const sandboxKind = options.sandboxDriver?.kind ?? options.sandbox ?? "bwrap";
  const sandboxRoot = resolve(options.sandboxRoot ?? join(dataDir, "sandboxes"));
  const sandboxes =
    options.sandboxDriver ??
    createSandboxDriver({
      kind: sandboxKind,
      root: sandboxRoot,
      readOnlyPaths: runnerReadOnlyPaths(runnerEntry),
      ...(options.sandboxUidBase === undefined ? {} : { uidBase: options.sandboxUidBase }),
      logger,
    });
  const records = createRunnerRecords(join(dataDir, "runners"), join(dataDir, "standbys"));
  const launcher = currentProcess();
  // bwrap runs as each sandbox's uid and must pass through the data directory to reach the
  // sandbox's own folders: traverse only (0711), no listing, and every other entry of it
  // (keys, state, objects, the dev key) closed to every uid but core's. Nothing of the data
  // directory is visible inside a sandbox either way.
  const prepared =
    sandboxKind === "bwrap" && dirname(sandboxRoot) === dataDir
      ? openDataDirToSandboxes(dataDir, basename(sandboxRoot))
      : Promise.resolve();
  const caller: RunnerCaller = createRunnerCaller(options.tokenKeys);
  const runners = new Map<string, Tracked>();
  const locks = new Map<string, Promise<unknown>>();
  const adopting = new Map<string, Promise<Tracked | undefined>>();
  /** Sandboxes being created or handed over right now: the orphan sweep leaves them alone. */
  const launching = new Set<string>();
  /** The egress proxy of each sandbox that has one (`network.mode` allowlist), by sandbox id. */
  const egress = new Map<string, Promise<EgressProxy>>();
  const allowHosts = options.network?.mode === "allowlist" ? options.network.allowHosts : undefined;
  let closed = false;

  /** Opens the sandbox's way out through core's allowlist proxy, once; nothing without an allowlist. */
  const openEgress = async (sandbox: Sandbox) => {
    if (!allowHosts) return;
    let proxy = egress.get(sandbox.id);
    if (!proxy) {
      proxy = createEgressProxy({
        socketPath: join(sandbox.hostDirs.run, egressSocketName),
        allow: allowHosts,
        uid: sandbox.uid,
        gid: sandbox.gid,
        logger: logger.child({ sandboxId: sandbox.id }),
      });
      egress.set(sandbox.id, proxy);
      proxy.catch(() => egress.delete(sandbox.id));
    }
    await proxy;
  };
  const closeEgress = async (sandboxId: string) => {
    const proxy = egress.get(sandboxId);
    egress.delete(sandboxId);
    await (await proxy?.catch(() => undefined))?.close();
  };

  const launchOptions: RunnerLaunchOptions = {
    runnerEntry,
    nodeOptions: options.nodeOptions ?? ["--max-semi-space-size=1"],
    tokenPublicKeyPem: options.tokenKeys.publicKeyPem,
    logLevel: logger.isLevelEnabled("debug") ? "debug" : "info",
    env: runnerEnvironment(sandboxKind, join(dataDir, "cache", "node-compile")),
    egress: allowHosts !== undefined,
  };

  const endpointOf = (sandbox: Sandbox) => unixEndpoint(join(sandbox.hostDirs.run, runnerSocketName));
  const previewEndpointOf = (sandbox: Sandbox) => unixEndpoint(join(sandbox.hostDirs.run, previewSocketName));

  /** Runs `task` after every earlier start, stop or removal of the same repl has finished. */
  const serialize = <T>(replId: string, task: () => Promise<T>): Promise<T> => {
    const previous = locks.get(replId) ?? Promise.resolve();
    const run = previous.then(task, task);
    const settled = run.catch(() => {});
    locks.set(replId, settled);
    void settled.then(() => {
      if (locks.get(replId) === settled) locks.delete(replId);
    });
    return run;
  };

  const instance = (runner: Tracked): RunnerInstance => ({
    id: runner.sandbox.id,
    replId: runner.replId,
    userId: runner.userId,
    phase: runner.phase,
    endpoint: endpointOf(runner.sandbox),
    previewEndpoint: previewEndpointOf(runner.sandbox),
    startedAtMs: runner.startedAtMs,
    ...(runner.detail ? { detail: runner.detail } : {}),
  });

  /** The runner is gone: its sandbox's processes and cgroups go too; its workspace stays. */
  const markGone = (runner: Tracked, detail: string) => {
    if (runner.gone.signal.aborted || runner.detached) return;
    clearInterval(runner.watcher);
    const stopping = runner.phase === "stopping";
    if (!stopping) logger.warn({ replId: runner.replId, pid: runner.pid, detail }, "runner exited");
    runner.phase = "exited";
    runner.detail = detail;
    runner.gone.abort();
    caller.forget({ replId: runner.replId, endpoint: endpointOf(runner.sandbox) });
    // A stop in progress removes the sandbox itself.
    if (stopping) return;
    void (async () => {
      await closeEgress(runner.sandbox.id);
      await runner.sandbox.destroy({ keepDirs: true });
      await records.remove(runner.replId, runner.sandbox.id);
    })().catch((error: unknown) => {
      logger.warn({ err: error, replId: runner.replId }, "could not clean up after a runner; the reconciler retries");
    });
  };

  /**
   * Watches that the runner process itself lives: a sandbox outlives its runner while the
   * programs it started run on, and a runner killed from inside the repl leaves them behind.
   */
  const watch = (runner: Tracked) => {
    runner.watcher = setInterval(() => {
      void runnerAlive(runner.sandbox).then(
        (alive) => {
          if (!alive && !runner.gone.signal.aborted && runner.phase !== "stopping") {
            markGone(runner, "the runner process is gone");
          }
        },
        () => {},
      );
    }, runnerPollMs).unref();
  };

  /**
   * Takes over the runner a record describes, once it proves to be this repl's runner: its
   * sandbox exists and has processes, it answers health checks on its socket, and its
   * RunnerService (called with a token for this repl) reports this repl id. A record that
   * fails this is stale: its sandbox's processes are killed (keeping the workspace) and the
   * record removed, unless it is young enough to belong to a runner still starting.
   */
  const adopt = (replId: string): Promise<Tracked | undefined> => {
    const pending = adopting.get(replId);
    if (pending) return pending;
    const attempt = (async () => {
      const record = await records.read(replId);
      if (!record) {
        await records.discard(replId);
        return undefined;
      }
      const log = logger.child({ replId, sandboxId: record.sandboxId, pid: record.pid });
      if (claimedByAnother(replId, record.sandboxId)) {
        log.warn("dropping a record whose sandbox belongs to another repl's runner");
        await records.remove(replId, record.sandboxId);
        return undefined;
      }
      const sandbox = await sandboxes.open(record.sandboxId);
      // A start still under way (here, or in a replica sharing the data directory) is left to
      // finish; one whose core died is abandoned at once.
      const young =
        Date.now() - record.startedAtMs < startingRecordMs &&
        (launching.has(record.sandboxId) || (record.launcher !== undefined && (await processAlive(record.launcher))));
      if (!sandbox) {
        if (young) return undefined;
        log.info("dropping the record of a runner whose sandbox is gone");
        await records.remove(replId, record.sandboxId);
        return undefined;
      }
      const endpoint = endpointOf(sandbox);
      let answers = false;
      let servesAnother = false;
      if ((await sandbox.pids()).length > 0 && (await caller.health(endpoint))) {
        try {
          await caller.status({ replId, endpoint });
          answers = true;
        } catch (error) {
          // A runner that answers but refuses this repl's token (it checks the audience), or
          // reports another repl, serves another repl: it is never touched here.
          servesAnother =
            error instanceof ConnectError &&
            [Code.FailedPrecondition, Code.Unauthenticated, Code.PermissionDenied].includes(error.code);
          log.warn({ err: error }, "a recorded runner does not prove it serves this repl");
        }
      }
      const current = runners.get(replId);
      if (current) return current;
      if (servesAnother) {
        await records.remove(replId, record.sandboxId);
        return undefined;
      }
      if (!answers) {
        if (young) return undefined;
        log.warn("removing a runner that does not answer: core cannot manage it");
        await sandbox.destroy({ keepDirs: true });
        await records.remove(replId, record.sandboxId);
        return undefined;
      }
      const runner: Tracked = {
        replId,
        userId: record.userId,
        sandbox,
        pid: record.pid,
        startedAtMs: record.startedAtMs,
        phase: "ready",
        gone: new AbortController(),
      };
      await openEgress(sandbox);
      watch(runner);
      runners.set(replId, runner);
      log.info("adopted a running runner");
      return runner;
    })().finally(() => adopting.delete(replId));
    adopting.set(replId, attempt);
    return attempt;
  };

  /** Whether another repl's tracked runner runs in the sandbox: then it is never touched for `replId`. */
  const claimedByAnother = (replId: string, sandboxId: string): boolean => {
    for (const runner of runners.values()) if (runner.replId !== replId && runner.sandbox.id === sandboxId) return true;
    return false;
  };

  /**
   * The repl's runner: tracked, or adopted from its record. The record is the truth shared by
   * replicas on one data directory: a tracked runner it no longer names was stopped, or
   * replaced by a newer start, by another core, and is let go of.
   */
  const find = async (replId: string): Promise<Tracked | undefined> => {
    const tracked = runners.get(replId);
    if (tracked && !launching.has(tracked.sandbox.id)) {
      const record = await records.read(replId);
      const replaced = record !== undefined && record.sandboxId !== tracked.sandbox.id;
      const removed = record === undefined && tracked.phase !== "exited" && tracked.phase !== "stopping";
      if ((replaced || removed) && runners.get(replId) === tracked) {
        logger.info(
          { replId, sandboxId: tracked.sandbox.id },
          "letting go of a runner another core replaced or stopped",
        );
        detach(tracked);
        runners.delete(replId);
      }
    }
    return runners.get(replId) ?? (await adopt(replId));
  };

  const pool: StandbyPool = createStandbyPool({
    target: options.standbyRunners ?? 0,
    logger,
    async launch() {
      await prepared;
      const id = newSandboxId();
      launching.add(id);
      try {
        await records.writeStandby({ sandboxId: id, launcher: await launcher });
        const sandbox = await sandboxes.create(id, standbyLimits).catch(async (error: unknown) => {
          await records.removeStandby(id);
          throw error;
        });
        try {
          const runner = launchRunner(
            sandbox,
            ["--standby", "--standby-id", id],
            launchOptions,
            logger.child({ standbySandboxId: id }),
          );
          return { sandbox, runner };
        } catch (error) {
          await sandbox.destroy();
          await records.removeStandby(id);
          throw error;
        }
      } finally {
        launching.delete(id);
      }
    },
  });

  /** Starts the repl's runner: a standby handed the repl, or a new sandbox with a runner booted for it. */
  const launch = async (spec: RunnerSpec, signal?: AbortSignal): Promise<Tracked> => {
    const { replId } = spec;
    try {
      await access(runnerEntry);
    } catch {
      throw new ConnectError(`the runner bundle ${runnerEntry} is missing: run npm run build`, Code.FailedPrecondition);
    }
    await prepared;
    const log = logger.child({ replId });
    const standby = pool.take();
    const sandboxId = standby?.sandbox.id ?? newSandboxId();
    launching.add(sandboxId);
    const startedAtMs = Date.now();
    // Intent first: a core that dies from here on leaves a record naming the sandbox, so the
    // next one finds and removes whatever this start left.
    const launchedBy = await launcher;
    await records.write({
      replId,
      userId: spec.userId,
      sandboxId,
      pid: standby?.runner.pid ?? 0,
      startedAtMs,
      launcher: launchedBy,
    });
    // The runner record covers a standby handed over from here on.
    if (standby) await records.removeStandby(sandboxId);
    failpoint("start-recorded");
    let sandbox: Sandbox | undefined = standby?.sandbox;
    let runner: RunnerProcess | undefined = standby?.runner;
    const timeout = AbortSignal.timeout(listenTimeoutMs);
    const abort = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      if (standby && sandbox && runner) {
        await sandbox.setLimits(spec.resources);
        await openEgress(sandbox);
        await caller.assign({ replId: sandbox.id, endpoint: endpointOf(sandbox) }, replId, abort);
        failpoint("start-assigned");
        runner.relayTo(log.child({ pid: runner.pid }));
      } else {
        sandbox = await sandboxes.create(sandboxId, spec.resources);
        await openEgress(sandbox);
        runner = launchRunner(sandbox, ["--repl-id", replId], launchOptions, log);
        failpoint("start-spawned");
        await records.write({
          replId,
          userId: spec.userId,
          sandboxId,
          pid: runner.pid,
          startedAtMs,
          launcher: launchedBy,
        });
        await abortable(runner.waitFor("listening"), abort);
      }
    } catch (error) {
      const detail = runner && runner.child.exitCode !== null ? await runner.exited : undefined;
      await closeEgress(sandboxId);
      await sandbox?.destroy({ keepDirs: false }).catch((cleanup: unknown) => {
        log.warn({ err: cleanup }, "could not remove the sandbox of a failed start");
      });
      await records.remove(replId, sandboxId);
      const tail = runner?.tail.slice(-10).join("\n");
      const context = `(repl ${replId}, sandbox ${sandboxId})${tail ? `; its last output:\n${tail}` : ""}`;
      if (signal?.aborted) throw new ConnectError("start canceled", Code.Canceled, undefined, undefined, error);
      if (timeout.aborted) {
        throw new ConnectError(`the runner did not listen within ${listenTimeoutMs} ms ${context}`, Code.Unavailable);
      }
      const reason = detail ?? (error instanceof Error ? error.message : String(error));
      throw new ConnectError(
        `the runner failed to start: ${reason} ${context}`,
        Code.Unavailable,
        undefined,
        undefined,
        error,
      );
    } finally {
      launching.delete(sandboxId);
    }
    const tracked: Tracked = {
      replId,
      userId: spec.userId,
      sandbox,
      pid: runner.pid,
      startedAtMs,
      phase: "starting",
      runner,
      gone: new AbortController(),
    };
    runners.set(replId, tracked);
    void runner.exited.then((detail) => markGone(tracked, detail));
    watch(tracked);
    await replaceLastWorkspace(replId, sandbox);
    log.info(
      { templateName: spec.templateName, userId: spec.userId, sandboxId, standby: Boolean(standby) },
      "runner listening",
    );
    return tracked;
  };

  /** Records the new sandbox as the repl's workspace and removes the one it last ran in. */
  const replaceLastWorkspace = async (replId: string, sandbox: Sandbox) => {
    const previous = await records.readWorkspace(replId);
    await records.writeWorkspace({
      replId,
      sandboxId: sandbox.id,
      dir: dirname(sandbox.hostDirs.run),
      workspace: sandbox.hostDirs.workspace,
    });
    if (previous && previous.sandboxId !== sandbox.id) await removeSandboxDir(previous.sandboxId, previous.dir);
  };

  /** Removes a stopped sandbox's folder (its processes and cgroups are gone already). */
  const removeSandboxDir = async (sandboxId: string, dir: string) => {
    const sandbox = await sandboxes.open(sandboxId);
    if (sandbox) await sandbox.destroy({ keepDirs: false });
    await rm(dir, { recursive: true, force: true });
  };

  /** Waits up to `timeoutMs` for the runner to be gone; true if it is. */
  const waitGone = async (runner: Tracked, timeoutMs: number): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if ((await runner.sandbox.pids()).length === 0) markGone(runner, "stopped");
      if (runner.gone.signal.aborted) return true;
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(25, Math.max(deadline - Date.now(), 1)));
    }
  };

  const stopRunner = async (replId: string, graceMs: number, runnerId?: string) => {
    const runner = await find(replId);
    if (!runner) return;
    if (runnerId !== undefined && runner.sandbox.id !== runnerId) return;
    const log = logger.child({ replId, sandboxId: runner.sandbox.id });
    if (runner.phase !== "exited") {
      runner.phase = "stopping";
      const deadline = Date.now() + graceMs;
      if (graceMs > 0) {
        try {
          await caller.shutdown(
            { replId, endpoint: endpointOf(runner.sandbox) },
            { graceMs, reason: "stopped", signal: AbortSignal.any([AbortSignal.timeout(graceMs), runner.gone.signal]) },
          );
        } catch (error) {
          if (!runner.gone.signal.aborted) log.info({ err: error }, "graceful shutdown did not complete");
        }
      }
      // A drained runner keeps serving reads until its orchestrator ends it. A stop without a
      // grace period (a deletion, a forced stop) kills it at once: a SIGTERM it had no time to
      // act on made every such stop report a runner that outlived its grace.
      let gone = false;
      if (graceMs > 0) {
        await runner.sandbox.signal("SIGTERM");
        gone = await waitGone(runner, Math.max(deadline - Date.now(), Math.min(graceMs, 1_000)));
        if (!gone) log.info("runner still running after its grace period; killing its sandbox");
      }
      if (!gone) {
        await runner.sandbox.kill();
        if (!(await waitGone(runner, 10_000))) {
          throw new ConnectError(`the runner of ${replId} (sandbox ${runner.sandbox.id}) does not die`, Code.Internal);
        }
      }
      log.info("runner stopped");
    }
    // The sandbox's processes and cgroups go; its workspace stays until the next start or a delete.
    await closeEgress(runner.sandbox.id);
    await runner.sandbox.destroy({ keepDirs: true });
    runners.delete(replId);
    await records.remove(replId, runner.sandbox.id);
  };

  /**
   * Removes sandboxes nothing explains: no runner record names them, they are not in the
   * standby pool, and no start is creating them. Their processes are killed; their folders
   * go too unless they hold a repl's last workspace.
   */
  const sweepOrphans = async (recorded: Set<string>) => {
    const kept = new Set((await records.listWorkspaces()).map((record) => record.sandboxId));
    const standbys = pool.ids();
    const self = await launcher;
    // Another live core's standbys (replicas sharing the data directory) are its own business.
    for (const standby of await records.listStandbys()) {
      const mine = standby.launcher.pid === self.pid && standby.launcher.startTicks === self.startTicks;
      if (
        mine
          ? standbys.has(standby.sandboxId) || launching.has(standby.sandboxId)
          : await processAlive(standby.launcher)
      ) {
        standbys.add(standby.sandboxId);
      } else if (!recorded.has(standby.sandboxId)) {
        await records.removeStandby(standby.sandboxId);
      }
    }
    for (const id of await sandboxes.list()) {
      if (recorded.has(id) || standbys.has(id) || launching.has(id)) continue;
      const sandbox = await sandboxes.open(id);
      if (!sandbox) continue;
      if ((await sandbox.pids()).length > 0) logger.warn({ sandboxId: id }, "removing a sandbox no record explains");
      await sandbox.destroy({ keepDirs: kept.has(id) });
    }
  };

  const list = async (): Promise<RunnerInstance[]> => {
    await records.sweepTemporary();
    const ids = await records.list();
    await Promise.all(ids.filter((replId) => !runners.has(replId)).map((replId) => adopt(replId)));
    // Read again after adoption, which removed the stale records: the young ones left (a start
    // under way) keep their sandbox out of the sweep.
    const recorded = new Set<string>();
    for (const replId of await records.list()) {
      const record = await records.read(replId);
      if (record) recorded.add(record.sandboxId);
    }
    for (const runner of runners.values()) recorded.add(runner.sandbox.id);
    await sweepOrphans(recorded).catch((error: unknown) => logger.warn({ err: error }, "could not sweep sandboxes"));
    return [...runners.values()].filter((runner) => runner.phase !== "exited").map(instance);
  };

  /** Lets core exit without its runners: stops relaying their output and lets go of their processes. */
  const detach = (runner: Tracked) => {
    runner.detached = true;
    clearInterval(runner.watcher);
    runner.runner?.child.stdout?.destroy();
    runner.runner?.child.stderr?.destroy();
    runner.runner?.child.unref();
  };

  return {
    driver: "local",

    start(spec, signal) {
      checkReplId(spec.replId);
      return serialize(spec.replId, async () => {
        if (closed) throw new ConnectError("the orchestrator is closed", Code.Unavailable);
        if (signal?.aborted) throw new ConnectError("start canceled", Code.Canceled);
        const current = await find(spec.replId);
        if (current && current.phase !== "exited") return instance(current);
        if (current) runners.delete(spec.replId);
        return instance(await launch(spec, signal));
      });
    },

    async waitReady(replId, timeoutMs, signal) {
      checkReplId(replId);
      const runner = await find(replId);
      if (!runner) throw new ConnectError(`no runner runs for ${replId}`, Code.Unavailable);
      const timeout = AbortSignal.timeout(Math.max(timeoutMs, 0));
      const abort = AbortSignal.any([timeout, runner.gone.signal, ...(signal ? [signal] : [])]);
      const failure = () => {
        if (runner.gone.signal.aborted) {
          const tail = runner.runner?.tail.slice(-10).join("\n");
          return new ConnectError(
            `${runner.detail ?? "the runner exited"} (repl ${replId})${tail ? `; its last output:\n${tail}` : ""}`,
            Code.Unavailable,
          );
        }
        if (signal?.aborted) return new ConnectError("waiting for the runner was canceled", Code.Canceled);
        return new ConnectError(
          `the runner of ${replId} did not become ready within ${timeoutMs} ms`,
          Code.DeadlineExceeded,
        );
      };
      for (;;) {
        if (abort.aborted) throw failure();
        if (runner.phase === "stopping")
          throw new ConnectError(`the runner of ${replId} is stopping`, Code.Unavailable);
        if (await caller.health(endpointOf(runner.sandbox), abort)) {
          if (abort.aborted) throw failure();
          if (runner.phase === "starting") runner.phase = "ready";
          return instance(runner);
        }
        try {
          await sleep(50, undefined, { signal: abort });
        } catch {
          throw failure();
        }
      }
    },

    async get(replId) {
      checkReplId(replId);
      const runner = await find(replId);
      if (runner && runner.phase !== "exited" && runner.phase !== "stopping" && !(await runnerAlive(runner.sandbox))) {
        markGone(runner, "the runner process is gone");
      }
      return runner ? instance(runner) : undefined;
    },

    list,

    stop(replId, graceMs, stopOptions = {}) {
      checkReplId(replId);
      return serialize(replId, () => stopRunner(replId, graceMs, stopOptions.runnerId));
    },

    workspacePath(replId) {
      checkReplId(replId);
      const tracked = runners.get(replId);
      if (tracked) return tracked.sandbox.hostDirs.workspace;
      // No workspace on disk: a path where nothing is.
      return records.readWorkspaceSync(replId)?.workspace ?? join(dataDir, "sandboxes", "none", replId);
    },

    removeWorkspace(replId) {
      checkReplId(replId);
      return serialize(replId, async () => {
        const runner = await find(replId);
        if (runner && runner.phase !== "exited") {
          throw new ConnectError(`the runner of ${replId} is still running: stop it first`, Code.FailedPrecondition);
        }
        const last = await records.readWorkspace(replId);
        if (last) await removeSandboxDir(last.sandboxId, last.dir);
        await records.removeWorkspace(replId);
      });
    },

    async close(closeOptions = {}) {
      if (closed) return;
      closed = true;
      await pool.close();
      if (closeOptions.stopRunners) {
        const ids = new Set([...runners.keys(), ...(await list()).map((runner) => runner.replId)]);
        const results = await Promise.allSettled(
          [...ids].map((replId) => serialize(replId, () => stopRunner(replId, closeGraceMs))),
        );
        for (const result of results) {
          if (result.status === "rejected") logger.error({ err: result.reason }, "a runner did not stop");
        }
      }
      for (const runner of runners.values()) detach(runner);
      runners.clear();
      // A restarted core opens the proxies of the runners it adopts again.
      await Promise.all([...egress.keys()].map((sandboxId) => closeEgress(sandboxId)));
      caller.close();
    },
  };
}

/** The limits of a standby until it is handed a repl (then its template's apply). */
const standbyLimits = { memoryBytes: 512 * 1024 * 1024, cpuMillicores: 1_000, maxProcesses: 256 };

/**
 * Where core keeps sandboxes by default: `<dataDir>/sandboxes` when every folder above the data
 * directory lets other uids through (bwrap runs as each sandbox's uid and must reach it), else
 * `/var/lib/devex/sandboxes/<hash of the data directory>`, so that a data directory in a
 * closed folder (a checkout in a 0700 home) works as it is and stays closed.
 */
export async function defaultSandboxRoot(dataDir: string): Promise<string> {
  const absolute = resolve(dataDir);
  if (!(await closedAncestor(absolute))) return join(absolute, "sandboxes");
  const hash = createHash("sha256").update(absolute).digest("hex").slice(0, 16);
  return join("/var/lib/devex/sandboxes", hash);
}

/**
 * Lets sandbox uids traverse `dataDir` (0711) to their sandboxes' folder `sandboxes`, and
 * closes every other entry of it to them (0700 folders, no group or other bits on files).
 */
async function openDataDirToSandboxes(dataDir: string, sandboxes: string): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o711 });
  await chmod(dataDir, 0o711);
  for (const entry of await readdir(dataDir, { withFileTypes: true })) {
    if (entry.name === sandboxes) continue;
    const path = join(dataDir, entry.name);
    if (entry.isDirectory()) await chmod(path, 0o700);
    else if (entry.isFile()) await chmod(path, (await stat(path)).mode & 0o700);
  }
}

/** The process title the runner gives itself (`/proc/<pid>/comm`), so programs in a repl do not hit it with `pkill node`. */
const runnerProcessTitle = "devex-runner";

/** Whether a runner process still runs in the sandbox. */
async function runnerAlive(sandbox: Sandbox): Promise<boolean> {
  for (const pid of await sandbox.pids()) {
    try {
      if ((await readFile(`/proc/${pid}/comm`, "utf8")).trim() === runnerProcessTitle) return true;
    } catch {
      // gone meanwhile
    }
  }
  return false;
}

/**
 * What the runner needs of the host, bound read-only into each sandbox at the same paths:
 * the Node binary, the runner bundle (with its package.json), and the packages the bundle
 * loads at run time (node-pty's native addon and the terminal emulator).
 */
function runnerReadOnlyPaths(runnerEntry: string): string[] {
  const bundleDir = dirname(runnerEntry);
  const require = createRequire(runnerEntry);
  const packageDir = (name: string) => {
    try {
      return dirname(require.resolve(`${name}/package.json`));
    } catch {
      return undefined;
    }
  };
  const manifest = join(dirname(bundleDir), "package.json");
  const paths = [
    dirname(process.execPath),
    bundleDir,
    existsSync(manifest) ? manifest : undefined,
    packageDir("node-pty"),
    packageDir("@xterm/headless"),
  ];
  return [...new Set(paths.filter((path): path is string => path !== undefined))];
}

/**
 * The environment of a runner process: a few well-known variables, never core's
 * configuration or secrets. In a sandbox a UTF-8 locale (the sandbox sets the rest); without
 * one, the host's values and a V8 code cache shared by all runners (they all run the same
 * bundle, so each start after the first skips most of its compilation; in a sandbox a
 * shared cache would let one repl poison another's runner). The runner passes none of this
 * beyond its own whitelist to the programs in the workspace.
 */
function runnerEnvironment(kind: "bwrap" | "none", compileCacheDir: string): Record<string, string> {
  // The sandbox gives its user PATH, HOME, TMPDIR, USER, LOGNAME and SHELL itself.
  if (kind === "bwrap") return { LANG: "C.UTF-8" };
  const env: Record<string, string> = {};
  for (const name of ["PATH", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ"]) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  env.NODE_COMPILE_CACHE = compileCacheDir;
  return env;
}

/** Resolves like `promise`, or rejects once `signal` aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolvePromise, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolvePromise(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
