import { Code, ConnectError } from "@connectrpc/connect";
import type { ProcessConfig, ProcessSelector } from "@devex/gen/devex/runner/v1/process_pb.js";
import type { Logger } from "pino";
import { resolveWorkingDirectory } from "../working-directory.js";
import { ManagedProcess, type ProcessListener, type ProcessSpec } from "./managed-process.js";
import { type StartedChild, startChild } from "./spawn.js";

/** Options for {@link ProcessManager}. */
export interface ProcessManagerOptions {
  /** The workspace root (real path): working directories must lie inside it. */
  workspace: string;
  /** The environment every process starts from; the request's env is added to it. */
  environment: (extra: Record<string, string>) => Record<string, string>;
  logger: Logger;
  /** Processes allowed to run at once; more fail with RESOURCE_EXHAUSTED. */
  maxProcesses: number;
  /** The most output kept per process and stream for clients that connect later, in bytes. */
  outputCapBytes: number;
  /** How long an exited process stays known, with its status and output, in ms. */
  exitRetentionMs: number;
  /** Called on every chunk of process output (activity). */
  onOutput: () => void;
  /** Milliseconds since the epoch; injectable so tests can move time. Default Date.now. */
  clock?: () => number;
  /** How long an exit waits for the output pipes to close, in ms (see ManagedProcessOptions). */
  stdioDrainMs?: number;
  /** Cgroup directories every process starts in (`--process-cgroups`); none means the runner's own. */
  cgroups?: readonly string[];
}

/** What to start; see {@link ProcessManager.start}. */
export interface StartOptions {
  config: ProcessConfig;
  /** Whether stdin is a pipe (else /dev/null). */
  stdin: boolean;
  /** Output kept per stream for clients that connect later; 0 or above the cap means the cap. */
  retainedOutputBytes: number;
  /** Follows the output from the first byte (RunProcess). */
  listener?: ProcessListener;
}

/**
 * The table of a runner's processes: starts them, finds them by pid or tag, forgets them a
 * while after they exit, and ends them all on shutdown.
 */
export class ProcessManager {
  /** By serial, so in creation order (ListProcesses is oldest first). */
  private readonly processes = new Map<number, ManagedProcess>();
  /** When each exited process is forgotten, in ms since the epoch. */
  private readonly expiry = new Map<ManagedProcess, number>();
  private nextSerial = 1;
  /** Tags of processes being started (spawned, not yet in the table), with their count. */
  private readonly starting = { count: 0, tags: new Set<string>() };
  private readonly clock: () => number;

  constructor(private readonly options: ProcessManagerOptions) {
    this.clock = options.clock ?? Date.now;
  }

  /**
   * Starts a process. Errors: PERMISSION_DENIED, NOT_FOUND or FAILED_PRECONDITION for the
   * working directory; ALREADY_EXISTS for a tag of a running process; RESOURCE_EXHAUSTED at the
   * process limit; NOT_FOUND or FAILED_PRECONDITION when the program cannot be started;
   * FAILED_PRECONDITION when it cannot enter its cgroups (it then never ran).
   */
  async start(start: StartOptions): Promise<ManagedProcess> {
    const { config } = start;
    const cwd = await resolveWorkingDirectory(this.options.workspace, config.cwd);
    const argv = config.shell !== "" ? ["bash", "-lc", config.shell] : config.argv;
    if (argv.length === 0) throw new ConnectError("config: one of argv and shell is required", Code.InvalidArgument);
    // From here to the reservation nothing awaits, so two calls with the same tag cannot both
    // pass the check; the reservation holds the tag and a slot while the program starts.
    this.prune();
    if (config.tag !== "" && (this.runningWithTag(config.tag) || this.starting.tags.has(config.tag))) {
      throw new ConnectError(`a running process already has the tag "${config.tag}"`, Code.AlreadyExists);
    }
    if (this.running() + this.starting.count >= this.options.maxProcesses) {
      throw new ConnectError(
        `the runner already runs ${this.options.maxProcesses} processes, its limit`,
        Code.ResourceExhausted,
      );
    }
    const spec: ProcessSpec = {
      argv,
      shell: config.shell,
      cwd,
      tag: config.tag,
      timeoutMs: config.timeoutMs,
      stdin: start.stdin,
      retainedOutputBytes: Math.min(
        start.retainedOutputBytes || this.options.outputCapBytes,
        this.options.outputCapBytes,
      ),
    };
    let child: StartedChild;
    this.starting.count++;
    if (config.tag !== "") this.starting.tags.add(config.tag);
    try {
      child = await startChild({
        argv,
        env: this.options.environment(config.env),
        cwd: cwd.absolute,
        stdin: start.stdin,
        cgroups: this.options.cgroups ?? [],
      });
    } finally {
      this.starting.count--;
      this.starting.tags.delete(config.tag);
    }
    const process = new ManagedProcess(child, spec, {
      serial: this.nextSerial++,
      clock: this.clock,
      logger: this.options.logger,
      onOutput: this.options.onOutput,
      onFinished: (finished) => this.retain(finished),
      stdioDrainMs: this.options.stdioDrainMs,
    });
    if (start.listener) process.listen(start.listener);
    this.processes.set(process.serial, process);
    this.options.logger.info(
      { pid: process.pid, tag: spec.tag, program: argv[0], cwd: cwd.relative },
      "process started",
    );
    return process;
  }

  /**
   * The process a selector names: by pid the newest with that pid; by tag the running one, or
   * else the newest retained one. NOT_FOUND if there is none.
   */
  select(selector: ProcessSelector | undefined): ManagedProcess {
    this.prune();
    let found: ManagedProcess | undefined;
    const { selector: by } = selector ?? { selector: { case: undefined } };
    if (by.case === "pid") {
      for (const process of this.processes.values()) if (process.pid === by.value) found = process;
      if (!found) throw new ConnectError(`no process with pid ${by.value}`, Code.NotFound);
    } else if (by.case === "tag") {
      found = this.runningWithTag(by.value);
      if (!found) for (const process of this.processes.values()) if (process.spec.tag === by.value) found = process;
      if (!found) throw new ConnectError(`no process with tag "${by.value}"`, Code.NotFound);
    } else {
      throw new ConnectError("process: a pid or a tag is required", Code.InvalidArgument);
    }
    return found;
  }

  /** Every known process (running, or exited and retained), oldest first. */
  list(): ManagedProcess[] {
    this.prune();
    return [...this.processes.values()];
  }

  /** The number of processes running right now. */
  running(): number {
    let count = 0;
    for (const process of this.processes.values()) if (process.running) count++;
    return count;
  }

  /**
   * Ends every running process: SIGTERM to its process group, then SIGKILL to the groups of
   * those still running after `graceMs`. Resolves once all have exited, with how many were
   * stopped and how many of them had to be killed.
   */
  async shutdown(graceMs: number): Promise<{ stopped: number; killed: number }> {
    const running = [...this.processes.values()].filter((process) => process.running);
    for (const process of running) process.killQuietly("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(running.map((process) => process.finished)),
      new Promise((resolve) => {
        timer = setTimeout(resolve, graceMs);
      }),
    ]);
    clearTimeout(timer);
    const stubborn = running.filter((process) => process.running);
    for (const process of stubborn) process.killQuietly("SIGKILL");
    await Promise.all(running.map((process) => process.finished));
    if (running.length > 0) {
      this.options.logger.info({ stopped: running.length, killed: stubborn.length }, "processes stopped");
    }
    return { stopped: running.length, killed: stubborn.length };
  }

  private runningWithTag(tag: string): ManagedProcess | undefined {
    for (const process of this.processes.values()) if (process.running && process.spec.tag === tag) return process;
    return undefined;
  }

  private retain(process: ManagedProcess): void {
    this.expiry.set(process, this.clock() + this.options.exitRetentionMs);
    // Frees the memory even if nobody looks at the table again; prune() checks the clock.
    setTimeout(() => this.prune(), this.options.exitRetentionMs + 1_000).unref();
  }

  /** Forgets exited processes whose retention has passed. */
  private prune(): void {
    const now = this.clock();
    for (const [process, expiresAt] of this.expiry) {
      if (expiresAt > now) continue;
      this.expiry.delete(process);
      this.processes.delete(process.serial);
    }
  }
}
