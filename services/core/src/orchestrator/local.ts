import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { access, mkdir, readdir, readFile, rename, rm, unlink, writeFile } from "node:fs/promises";
import { isAbsolute, join, relative, resolve } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { processExists } from "@devex/kit";
import type { Logger } from "pino";
import type { Orchestrator, RunnerInstance, RunnerPhase, RunnerSpec } from "./orchestrator.js";
import { createRunnerCaller, type RunnerCaller } from "./runner-client.js";
import type { TokenKeys } from "./token-keys.js";

/** Options for {@link createLocalOrchestrator}. */
export interface LocalOrchestratorOptions {
  /** Core's data directory: workspaces, homes and runner records live under it. */
  dataDir: string;
  /** The runner bundle (`runner/dist/main.js`, made by `npm run build`). */
  runnerEntry: string;
  tokenKeys: TokenKeys;
  logger: Logger;
  /** Node flags of each runner process. Default `["--max-semi-space-size=1"]`. */
  nodeOptions?: string[];
  /**
   * The HOME of a repl's programs. Default `<dataDir>/homes/<replId>`, so shell start-up
   * files are per repl. `removeWorkspace` removes it only when it lies inside `dataDir`.
   */
  home?: (replId: string) => string;
  /** How long a runner may take to log that it listens before `start` gives up, in ms. Default 30000. */
  listenTimeoutMs?: number;
  /** The grace period of each runner when `close({ stopRunners: true })` stops them all, in ms. Default 5000. */
  closeGraceMs?: number;
  /**
   * Runner processes kept started ahead of need (`--standby`: loaded and warmed up, no
   * repl yet), so that `start` hands one its repl instead of waiting for a process to
   * boot. Default 0: every start spawns a process.
   */
  standbyRunners?: number;
}

/** What `<dataDir>/runners/<replId>.json` says about a runner, so a restarted core can adopt it. */
interface RunnerRecord {
  replId: string;
  userId: string;
  pid: number;
  /** 0 until the runner reported its port. */
  port: number;
  startedAtMs: number;
}

/** A runner this orchestrator tracks: a child it started, or one adopted from its record. */
interface Tracked {
  replId: string;
  userId: string;
  pid: number;
  port: number;
  startedAtMs: number;
  phase: RunnerPhase;
  detail?: string;
  /** Set for runners this process started; adopted ones are watched by polling their pid. */
  child?: ChildProcess;
  /** The process's last output lines, for errors. */
  tail: string[];
  /** Aborted once the process is gone. */
  gone: AbortController;
  watcher?: NodeJS.Timeout;
  /** Set once this orchestrator let go of the process (closed without stopping it). */
  detached?: boolean;
}

/** A runner process started with `--standby`, not yet assigned a repl. */
interface Standby {
  child: ChildProcess;
  pid: number;
  startedAtMs: number;
  /** Set once it logged `standby`: warmed up and reading its assignment. */
  ready: boolean;
  /** Set once handed to a repl: from then on it is that repl's runner. */
  assigned: boolean;
  /** Where its output lines go; `launch` takes them over on assignment. */
  onLine: (stream: "stdout" | "stderr", line: string) => void;
}

const replIdPattern = /^repl_[0-9a-z]{26}$/;
/** Fields of every runner log line that core's own logger sets itself. */
const pinoBaseKeys = new Set(["time", "pid", "hostname", "name", "service"]);
const tailLines = 40;
/** How often an adopted runner's pid is checked. */
const adoptedPollMs = 1_000;
/** A record without a port younger than this belongs to a runner that may still be starting. */
const startingRecordMs = 30_000;
/**
 * How long after a standby was taken its replacement is started: booting one costs a
 * few hundred ms of CPU, which should not compete with the new repl's first requests.
 */
const standbyRefillDelayMs = 250;
/** The first delay before replacing a standby that died; doubled for each death in a row. */
const standbyRetryMs = 500;
/** The longest delay before replacing a standby that died. */
const standbyMaxRetryMs = 60_000;
/** A standby that lived this long before dying starts a new count of deaths in a row. */
const standbyHealthyMs = 60_000;

/**
 * The local orchestration driver: one runner process per active repl on this machine.
 * Runners run in their own process group (a Ctrl-C in core's terminal does not reach
 * them; core stops them) and are recorded under `<dataDir>/runners/`, so a restarted
 * core adopts the ones still running instead of losing track of them. With
 * `standbyRunners`, a start takes a runner process that already booted and warmed up
 * (see the runner's `--standby`) when one is ready, and spawns one otherwise.
 */
export function createLocalOrchestrator(options: LocalOrchestratorOptions): Orchestrator {
  const dataDir = resolve(options.dataDir);
  const runnerEntry = resolve(options.runnerEntry);
  const nodeOptions = options.nodeOptions ?? ["--max-semi-space-size=1"];
  const listenTimeoutMs = options.listenTimeoutMs ?? 30_000;
  const closeGraceMs = options.closeGraceMs ?? 5_000;
  const logger = options.logger.child({ driver: "local" });
  const recordsDir = join(dataDir, "runners");
  const caller: RunnerCaller = createRunnerCaller(options.tokenKeys);
  const runners = new Map<string, Tracked>();
  const locks = new Map<string, Promise<unknown>>();
  const adopting = new Map<string, Promise<Tracked | undefined>>();
  let closed = false;

  const workspacePath = (replId: string) => join(dataDir, "workspaces", checkReplId(replId));
  const homePath = (replId: string) => resolve(options.home?.(replId) ?? join(dataDir, "homes", replId));
  const recordPath = (replId: string) => join(recordsDir, `${replId}.json`);
  const endpointOf = (port: number) => `http://127.0.0.1:${port}`;

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
    replId: runner.replId,
    userId: runner.userId,
    phase: runner.phase,
    endpoint: runner.port ? endpointOf(runner.port) : "",
    startedAtMs: runner.startedAtMs,
    ...(runner.detail ? { detail: runner.detail } : {}),
  });

  const markGone = (runner: Tracked, detail: string) => {
    if (runner.gone.signal.aborted || runner.detached) return;
    clearInterval(runner.watcher);
    if (runner.phase !== "stopping") logger.warn({ replId: runner.replId, pid: runner.pid, detail }, "runner exited");
    runner.phase = "exited";
    runner.detail = detail;
    runner.gone.abort();
    caller.forget({ replId: runner.replId, endpoint: endpointOf(runner.port) });
    void removeRecord(runner.replId, runner.pid);
  };

  const writeRecord = async (record: RunnerRecord) => {
    await mkdir(recordsDir, { recursive: true });
    const path = recordPath(record.replId);
    const temporary = `${path}.${process.pid}.tmp`;
    await writeFile(temporary, `${JSON.stringify(record)}\n`, { mode: 0o600 });
    await rename(temporary, path);
  };

  /** Removes the repl's record if it still describes process `pid` (a newer runner's record stays). */
  const removeRecord = async (replId: string, pid: number) => {
    const record = await readRecord(replId);
    if (record && record.pid !== pid) return;
    await unlink(recordPath(replId)).catch(() => {});
  };

  const readRecord = async (replId: string): Promise<RunnerRecord | undefined> => {
    try {
      const record = JSON.parse(await readFile(recordPath(replId), "utf8")) as Partial<RunnerRecord>;
      const valid =
        record.replId === replId &&
        typeof record.userId === "string" &&
        Number.isInteger(record.pid) &&
        Number(record.pid) > 0 &&
        Number.isInteger(record.port) &&
        typeof record.startedAtMs === "number";
      return valid ? (record as RunnerRecord) : undefined;
    } catch {
      return undefined;
    }
  };

  /** Whether `pid` runs a runner for the repl: true, false, or undefined where /proc is missing. */
  const isOurRunner = async (pid: number, replId: string): Promise<boolean | undefined> => {
    let args: string[];
    try {
      args = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
    } catch {
      // Without /proc (not Linux) nothing can be told; with it, the process is gone.
      return existsSync("/proc/self") ? false : undefined;
    }
    // The bundle's path may differ after an upgrade; the repl id flag is what identifies it.
    const at = args.indexOf("--repl-id");
    if (at >= 0) return args[at + 1] === replId;
    // A runner started as a standby read its repl on stdin: its command line cannot tell.
    return args.includes("--standby") ? undefined : false;
  };

  /**
   * Takes over the runner a record describes, once it proves to be this repl's runner:
   * its pid is alive, it answers health checks, and its RunnerService (called with a
   * token for this repl) reports this repl id. A record that fails this is stale and
   * removed; a runner of ours that is alive but does not answer cannot be managed and
   * is killed.
   */
  const adopt = (replId: string): Promise<Tracked | undefined> => {
    const pending = adopting.get(replId);
    if (pending) return pending;
    const attempt = (async () => {
      const record = await readRecord(replId);
      if (!record) {
        await unlink(recordPath(replId)).catch(() => {});
        return undefined;
      }
      const log = logger.child({ replId, pid: record.pid, port: record.port });
      if (!processExists(record.pid)) {
        log.info("dropping the record of a runner that is gone");
        await removeRecord(replId, record.pid);
        return undefined;
      }
      const ours = await isOurRunner(record.pid, replId);
      if (ours === false) {
        log.warn("dropping a runner record whose pid now belongs to another process");
        await removeRecord(replId, record.pid);
        return undefined;
      }
      const endpoint = endpointOf(record.port);
      let answers = false;
      if (record.port > 0 && (await caller.health(endpoint))) {
        try {
          await caller.status({ replId, endpoint });
          answers = true;
        } catch (error) {
          log.warn({ err: error }, "a recorded runner does not prove it serves this repl");
        }
      }
      const current = runners.get(replId);
      if (current) return current;
      if (!answers) {
        if (record.port === 0 && Date.now() - record.startedAtMs < startingRecordMs) return undefined;
        if (ours) {
          log.warn("killing a runner that does not answer: core cannot manage it");
          signalGroup(record.pid, "SIGKILL");
        } else {
          log.warn("dropping the record of a runner that does not answer");
        }
        await removeRecord(replId, record.pid);
        return undefined;
      }
      const runner: Tracked = {
        ...record,
        phase: "ready",
        tail: [],
        gone: new AbortController(),
      };
      runner.watcher = setInterval(() => {
        if (!processExists(runner.pid)) markGone(runner, "the runner process is gone");
      }, adoptedPollMs).unref();
      runners.set(replId, runner);
      log.info("adopted a running runner");
      return runner;
    })().finally(() => adopting.delete(replId));
    adopting.set(replId, attempt);
    return attempt;
  };

  /** The repl's runner: tracked, or adopted from its record. */
  const find = async (replId: string) => runners.get(replId) ?? (await adopt(replId));

  const logLevel = logger.isLevelEnabled("debug") ? "debug" : "info";
  const compileCacheDir = join(dataDir, "cache", "node-compile");

  /** Starts a runner process with these flags; every line of its output goes to `onLine`. */
  const spawnRunner = (
    flags: string[],
    where: { cwd: string; home?: string; stdin: "ignore" | "pipe" },
    onLine: (stream: "stdout" | "stderr", line: string) => void,
  ): ChildProcess => {
    const args = [
      ...nodeOptions,
      runnerEntry,
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      ...flags,
      `--token-public-key=${options.tokenKeys.publicKeyPem}`,
      "--log-level",
      logLevel,
    ];
    const child = spawn(process.execPath, args, {
      cwd: where.cwd,
      env: runnerEnvironment(where.home, compileCacheDir),
      // Its own process group: signals for core's terminal do not reach runners.
      detached: true,
      stdio: [where.stdin, "pipe", "pipe"],
    });
    if (child.stdout) createInterface({ input: child.stdout }).on("line", (line) => onLine("stdout", line));
    if (child.stderr) createInterface({ input: child.stderr }).on("line", (line) => onLine("stderr", line));
    return child;
  };

  /** Relays a line of a runner's output to core's log; returns it as a log record if it is one. */
  const relayLine = (log: Logger, stream: "stdout" | "stderr", line: string): Record<string, unknown> | undefined => {
    const record = parseLogLine(line);
    if (!record) {
      (stream === "stderr" ? log.warn : log.debug).call(log, { stream }, line.slice(0, 8_192));
      return undefined;
    }
    const { level, msg, ...rest } = record;
    const fields = Object.fromEntries(Object.entries(rest).filter(([key]) => !pinoBaseKeys.has(key)));
    const numeric = typeof level === "number" ? level : 30;
    const method = numeric >= 50 ? log.error : numeric >= 40 ? log.warn : log.debug;
    method.call(log, fields, typeof msg === "string" ? msg : "");
    return { ...fields, msg };
  };

  // The standby pool: runner processes started ahead of need, each waiting for the
  // assignment of a repl on its stdin. They are in no record and in no listing: they hold
  // no user data, and a restarted core must not adopt them. When core goes away, however
  // it goes, their stdin ends and they exit.
  const standbyTarget = Math.max(0, Math.floor(options.standbyRunners ?? 0));
  const standbys = new Set<Standby>();
  /** Standbys that died in a row without being assigned: the replacement backs off. */
  let standbyDeaths = 0;
  let refillTimer: NodeJS.Timeout | undefined;

  const scheduleRefill = (delayMs: number) => {
    if (closed || standbys.size >= standbyTarget || refillTimer) return;
    refillTimer = setTimeout(() => {
      refillTimer = undefined;
      refill().catch((error: unknown) => {
        logger.warn({ err: error }, "could not start a standby runner");
        scheduleRefill(standbyMaxRetryMs);
      });
    }, delayMs);
    refillTimer.unref();
  };

  const refill = async () => {
    await mkdir(dataDir, { recursive: true });
    while (!closed && standbys.size < standbyTarget) startStandby();
  };

  const startStandby = () => {
    const tail: string[] = [];
    const child = spawnRunner(["--standby"], { cwd: dataDir, stdin: "pipe" }, (stream, line) =>
      standby.onLine(stream, line),
    );
    const log = logger.child({ standbyPid: child.pid });
    const standby: Standby = {
      child,
      pid: child.pid ?? 0,
      startedAtMs: Date.now(),
      ready: false,
      assigned: false,
      onLine(stream, line) {
        tail.push(line);
        if (tail.length > tailLines) tail.shift();
        if (relayLine(log, stream, line)?.msg === "standby") standby.ready = true;
      },
    };
    // Writing the assignment to a standby that just died fails; its exit is handled below.
    child.stdin?.on("error", () => {});
    standbys.add(standby);
    const gone = (detail: string) => {
      // An assigned standby left the pool: its exit is its runner's.
      if (!standbys.delete(standby) || closed) return;
      if (Date.now() - standby.startedAtMs > standbyHealthyMs) standbyDeaths = 0;
      standbyDeaths++;
      const retryInMs = Math.min(standbyRetryMs * 2 ** (standbyDeaths - 1), standbyMaxRetryMs);
      log.warn({ detail, retryInMs, lastOutput: tail.slice(-10).join("\n") }, "a standby runner exited");
      scheduleRefill(retryInMs);
    };
    child.once("error", (error) => gone(`it could not be started: ${error.message}`));
    child.once("exit", (code, exitSignal) => {
      // Its last lines (why it failed) may still be in the pipes.
      const finish = () => {
        clearTimeout(timer);
        gone(exitSignal ? `it was killed by ${exitSignal}` : `it exited with code ${code}`);
      };
      const timer = setTimeout(finish, 250);
      child.once("close", finish);
    });
  };

  /** A warmed-up standby, out of the pool, or undefined if none is ready; its replacement follows. */
  const takeStandby = (): Standby | undefined => {
    for (const standby of standbys) {
      if (!standby.ready || standby.child.exitCode !== null || standby.child.signalCode !== null) continue;
      standbys.delete(standby);
      standby.assigned = true;
      standbyDeaths = 0;
      scheduleRefill(standbyRefillDelayMs);
      return standby;
    }
    return undefined;
  };

  const launch = async (spec: RunnerSpec, signal?: AbortSignal): Promise<Tracked> => {
    const { replId } = spec;
    try {
      await access(runnerEntry);
    } catch {
      throw new ConnectError(`the runner bundle ${runnerEntry} is missing: run npm run build`, Code.FailedPrecondition);
    }
    const workspace = workspacePath(replId);
    const home = homePath(replId);
    await Promise.all([mkdir(workspace, { recursive: true }), mkdir(home, { recursive: true })]);
    let onLine = (_stream: "stdout" | "stderr", _line: string) => {};
    const standby = takeStandby();
    let child: ChildProcess;
    if (standby) {
      child = standby.child;
      standby.onLine = (stream, line) => onLine(stream, line);
    } else {
      child = spawnRunner(
        ["--repl-id", replId, "--workspace", workspace, "--home", home],
        { cwd: workspace, home, stdin: "ignore" },
        (stream, line) => onLine(stream, line),
      );
    }
    if (child.pid === undefined) {
      const error = await new Promise<Error>((resolveError) => child.once("error", resolveError));
      throw new ConnectError(`the runner could not be started: ${error.message}`, Code.Unavailable);
    }
    const runner: Tracked = {
      replId,
      userId: spec.userId,
      pid: child.pid,
      port: 0,
      startedAtMs: Date.now(),
      phase: "starting",
      tail: [],
      gone: new AbortController(),
      child,
    };
    runners.set(replId, runner);
    const log = logger.child({ replId, pid: runner.pid });
    log.info({ templateName: spec.templateName, userId: spec.userId, standby: Boolean(standby) }, "starting runner");

    const listening = new Promise<number>((resolvePort, reject) => {
      onLine = (stream, line) => {
        runner.tail.push(line);
        if (runner.tail.length > tailLines) runner.tail.shift();
        const record = relayLine(log, stream, line);
        if (record?.msg === "listening" && typeof record.port === "number") resolvePort(record.port);
      };
      child.once("error", (error) => {
        markGone(runner, `the runner could not be started: ${error.message}`);
        reject(error);
      });
      child.once("exit", (code, exitSignal) => {
        const detail = exitSignal ? `the runner was killed by ${exitSignal}` : `the runner exited with code ${code}`;
        // Its last lines (why it failed) may still be in the pipes: wait for them, briefly, in
        // case a process it left behind holds them open.
        const finish = () => {
          clearTimeout(timer);
          markGone(runner, detail);
          reject(new Error(detail));
        };
        const timer = setTimeout(finish, 250);
        child.once("close", finish);
      });
    });
    // The standby serves the repl from this line on, exactly as if it had been started for it.
    standby?.child.stdin?.end(`${JSON.stringify({ replId, workspace, home })}\n`);
    listening.catch(() => {});

    const timeout = AbortSignal.timeout(listenTimeoutMs);
    const abort = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      // Recorded before it listens, so that a core that dies right now leaves a trace of it.
      await writeRecord(recordOf(runner));
      runner.port = await abortable(listening, abort);
      await writeRecord(recordOf(runner));
    } catch (error) {
      if (runner.gone.signal.aborted) throw unavailable(runner, runner.detail ?? "the runner failed to start");
      runner.phase = "stopping";
      signalGroup(runner.pid, "SIGKILL");
      runners.delete(replId);
      void removeRecord(replId, runner.pid);
      if (signal?.aborted) throw new ConnectError("start canceled", Code.Canceled, undefined, undefined, error);
      if (timeout.aborted) throw unavailable(runner, `the runner did not listen within ${listenTimeoutMs} ms`);
      throw ConnectError.from(error);
    }
    log.info({ port: runner.port }, "runner listening");
    return runner;
  };

  /** Waits up to `timeoutMs` for the runner's process to be gone; true if it is. */
  const waitGone = async (runner: Tracked, timeoutMs: number): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!runner.child && !processExists(runner.pid)) markGone(runner, "stopped");
      if (runner.gone.signal.aborted) return true;
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(25, Math.max(deadline - Date.now(), 1)));
    }
  };

  const stopRunner = async (replId: string, graceMs: number) => {
    const runner = await find(replId);
    if (!runner) return;
    const log = logger.child({ replId, pid: runner.pid });
    if (runner.phase !== "exited") {
      runner.phase = "stopping";
      const deadline = Date.now() + graceMs;
      if (runner.port > 0 && graceMs > 0) {
        try {
          await caller.shutdown(
            { replId, endpoint: endpointOf(runner.port) },
            { graceMs, reason: "stopped", signal: AbortSignal.any([AbortSignal.timeout(graceMs), runner.gone.signal]) },
          );
        } catch (error) {
          if (!runner.gone.signal.aborted) log.info({ err: error }, "graceful shutdown did not complete");
        }
      }
      // A drained runner keeps serving reads until its orchestrator ends the process.
      signalGroup(runner.pid, "SIGTERM");
      if (!(await waitGone(runner, Math.max(deadline - Date.now(), Math.min(graceMs, 1_000))))) {
        log.warn("runner still running after its grace period; killing it");
        signalGroup(runner.pid, "SIGKILL");
        if (!(await waitGone(runner, 10_000))) {
          throw new ConnectError(`the runner of ${replId} (pid ${runner.pid}) does not die`, Code.Internal);
        }
      }
      log.info("runner stopped");
    }
    runners.delete(replId);
    await removeRecord(replId, runner.pid);
  };

  const list = async (): Promise<RunnerInstance[]> => {
    let files: string[] = [];
    try {
      files = await readdir(recordsDir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    const recorded = files
      .filter((file) => file.endsWith(".json"))
      .map((file) => file.slice(0, -".json".length))
      .filter((replId) => replIdPattern.test(replId) && !runners.has(replId));
    await Promise.all(recorded.map((replId) => adopt(replId)));
    return [...runners.values()].filter((runner) => runner.phase !== "exited").map(instance);
  };

  /** Lets core exit without its runners: stops relaying their output and lets go of their processes. */
  const detach = (runner: Tracked) => {
    runner.detached = true;
    clearInterval(runner.watcher);
    runner.child?.stdout?.destroy();
    runner.child?.stderr?.destroy();
    runner.child?.unref();
  };

  scheduleRefill(0);

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
        if (runner.gone.signal.aborted) return unavailable(runner, runner.detail ?? "the runner exited");
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
        if (runner.port > 0 && (await caller.health(endpointOf(runner.port), abort))) {
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
      if (runner && !runner.child && runner.phase !== "exited" && !processExists(runner.pid)) {
        markGone(runner, "the runner process is gone");
      }
      return runner ? instance(runner) : undefined;
    },

    list,

    stop(replId, graceMs) {
      checkReplId(replId);
      return serialize(replId, () => stopRunner(replId, graceMs));
    },

    workspacePath,

    removeWorkspace(replId) {
      checkReplId(replId);
      return serialize(replId, async () => {
        const runner = await find(replId);
        if (runner && runner.phase !== "exited") {
          throw new ConnectError(`the runner of ${replId} is still running: stop it first`, Code.FailedPrecondition);
        }
        await rm(workspacePath(replId), { recursive: true, force: true });
        const home = homePath(replId);
        const inside = relative(dataDir, home);
        if (inside && !inside.startsWith("..") && !isAbsolute(inside)) await rm(home, { recursive: true, force: true });
      });
    },

    async close(closeOptions = {}) {
      if (closed) return;
      closed = true;
      clearTimeout(refillTimer);
      // Standbys exit as their stdin ends, as when core dies; local Ctrl-C (stopRunners) does not wait for it.
      for (const standby of standbys) {
        standby.child.stdin?.end();
        if (closeOptions.stopRunners) signalGroup(standby.pid, "SIGKILL");
        standby.child.stdout?.destroy();
        standby.child.stderr?.destroy();
        standby.child.unref();
      }
      standbys.clear();
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
      caller.close();
    },
  };
}

function checkReplId(replId: string): string {
  if (!replIdPattern.test(replId)) {
    throw new ConnectError(`not a repl id: ${JSON.stringify(replId)}`, Code.InvalidArgument);
  }
  return replId;
}

function recordOf(runner: Tracked): RunnerRecord {
  const { replId, userId, pid, port, startedAtMs } = runner;
  return { replId, userId, pid, port, startedAtMs };
}

function unavailable(runner: Tracked, reason: string): ConnectError {
  const tail = runner.tail.slice(-10).join("\n");
  return new ConnectError(
    `${reason} (repl ${runner.replId}, pid ${runner.pid})${tail ? `; its last output:\n${tail}` : ""}`,
    Code.Unavailable,
  );
}

/** Signals the process group a runner leads (it was started detached); gone already is fine. */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  // Group 0 would be core's own.
  if (pid <= 0) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // no such group any more
  }
}

function parseLogLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    return value && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The environment of a runner process: a few well-known variables, never core's
 * configuration or secrets, and a V8 code cache shared by all runners (they all run the same
 * bundle, so each start after the first skips most of its compilation). The runner passes
 * none of this beyond its own whitelist to the programs in the workspace.
 */
function runnerEnvironment(home: string | undefined, compileCacheDir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ["PATH", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"]) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  // A standby's repl, hence its home, is not known yet; the runner gives its programs their HOME itself.
  if (home !== undefined) env.HOME = home;
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
