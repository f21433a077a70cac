import type { ChildProcess } from "node:child_process";
import type { Readable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type ProcessExited,
  ProcessExitedSchema,
  type ProcessInfo,
  ProcessInfoSchema,
  ProcessState,
} from "@devex/gen/devex/runner/v1/process_pb.js";
import { ExitStatusSchema } from "@devex/gen/devex/runner/v1/runner_pb.js";
import type { Logger } from "pino";
import type { WorkingDirectory } from "../working-directory.js";
import { OutputBuffer, type OutputChunk } from "./output-buffer.js";

/** One of a process's two output streams. */
export type OutputStreamName = "stdout" | "stderr";

/** Something that follows a process's output as it is produced (a client stream, a RunProcess capture). */
export interface ProcessListener {
  /** A chunk was appended to `stream`; the chunk is whole, even if the buffer keeps only its tail. */
  output(stream: OutputStreamName, chunk: OutputChunk): void;
  /** The process has exited and all its output has been delivered; nothing follows. */
  exit(): void;
}

/** What a process was started as. */
export interface ProcessSpec {
  /** What was executed; ["bash", "-lc", shell] for a shell command. */
  argv: string[];
  /** The shell command line; empty for the argv form. */
  shell: string;
  cwd: WorkingDirectory;
  /** Empty if none. */
  tag: string;
  /** 0 = no timeout. */
  timeoutMs: number;
  /** Whether stdin is a pipe for SendProcessInput. */
  stdin: boolean;
  /** The output kept per stream for clients that connect later. */
  retainedOutputBytes: number;
}

/** What a {@link ManagedProcess} needs from its owner. */
export interface ManagedProcessOptions {
  /** The creation order among all processes of the runner. */
  serial: number;
  /** Milliseconds since the epoch; injectable so tests can move time. */
  clock: () => number;
  logger: Logger;
  /** Called for every chunk of output (activity). */
  onOutput: () => void;
  /** Called once, after the exit has been delivered to every listener. */
  onFinished: (process: ManagedProcess) => void;
  /**
   * How long to wait after the exit for the output pipes to close, in ms. A background child
   * that inherited them can keep them open for ever; the exit is reported after this at the
   * latest, and later output is read and discarded. Default 500.
   */
  stdioDrainMs?: number;
}

/**
 * One process started by ProcessService, from spawn until it is forgotten: its output buffers,
 * its listeners, its stdin, its timeout and its exit. Its lifetime does not depend on any RPC.
 */
export class ManagedProcess {
  /** See {@link ManagedProcessOptions.serial}. */
  readonly serial: number;
  readonly pid: number;
  readonly startedAtMs: number;
  readonly stdout: OutputBuffer;
  readonly stderr: OutputBuffer;
  /** Clients streaming the output right now. */
  attachedClients = 0;
  /** Resolves once the exit has been delivered to every listener. */
  readonly finished: Promise<void>;
  private endedAtMs: number | undefined;
  private exitStatus: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private killedByTimeout = false;
  private stdinOpen: boolean;
  private done = false;
  private seq = 0;
  private readonly listeners = new Set<ProcessListener>();
  private readonly deadline: NodeJS.Timeout | undefined;
  private resolveFinished: () => void = () => {};

  constructor(
    private readonly child: ChildProcess & { pid: number },
    readonly spec: ProcessSpec,
    private readonly options: ManagedProcessOptions,
  ) {
    this.serial = options.serial;
    this.pid = child.pid;
    this.startedAtMs = options.clock();
    this.stdout = new OutputBuffer(spec.retainedOutputBytes);
    this.stderr = new OutputBuffer(spec.retainedOutputBytes);
    this.stdinOpen = spec.stdin;
    this.finished = new Promise((resolve) => {
      this.resolveFinished = resolve;
    });
    child.stdout?.on("data", (data: Buffer) => this.append("stdout", data));
    child.stderr?.on("data", (data: Buffer) => this.append("stderr", data));
    // EPIPE when the process closed its stdin or exited: later writes report it, not a crash.
    child.stdin?.on("error", (error) => {
      this.stdinOpen = false;
      options.logger.debug({ pid: this.pid, err: error }, "process stdin failed");
    });
    child.on("error", (error) => options.logger.warn({ pid: this.pid, err: error }, "process error"));
    // A child started behind the cgroup shim was awaited, so it may have exited already.
    if (child.exitCode !== null || child.signalCode !== null)
      queueMicrotask(() => this.onExit(child.exitCode, child.signalCode));
    else child.once("exit", (code, signal) => this.onExit(code, signal));
    if (spec.timeoutMs > 0) {
      this.deadline = setTimeout(() => this.expire(), spec.timeoutMs);
      this.deadline.unref();
    }
  }

  /** Whether the process is still running (or stopped); false from the moment it exits. */
  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** Whether the exit has been delivered to listeners: no more output will be recorded. */
  get isFinished(): boolean {
    return this.done;
  }

  /** The buffer of one stream. */
  buffer(stream: OutputStreamName): OutputBuffer {
    return stream === "stdout" ? this.stdout : this.stderr;
  }

  /**
   * Follows the output from now on. A listener added after the process finished gets nothing:
   * check {@link isFinished} first.
   */
  listen(listener: ProcessListener): void {
    if (!this.done) this.listeners.add(listener);
  }

  /** Stops following. */
  unlisten(listener: ProcessListener): void {
    this.listeners.delete(listener);
  }

  /**
   * Sends a signal to the process, or to its whole process group. FAILED_PRECONDITION once it
   * has exited: its pid may then belong to someone else.
   */
  kill(signal: NodeJS.Signals, processGroup: boolean): void {
    if (!this.running) throw this.hasExited();
    try {
      // The child is the leader of its own group (detached), so -pid addresses the group.
      process.kill(processGroup ? -this.pid : this.pid, signal);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ESRCH") throw this.hasExited();
      throw new ConnectError(
        `cannot signal process ${this.pid}: ${code}`,
        Code.PermissionDenied,
        undefined,
        undefined,
        error,
      );
    }
  }

  /** Signals the whole process group if the process still runs; for the runner's own use (timeouts, shutdown). */
  killQuietly(signal: NodeJS.Signals): void {
    if (!this.running) return;
    try {
      this.kill(signal, true);
    } catch (error) {
      this.options.logger.warn({ pid: this.pid, signal, err: error }, "cannot signal process group");
    }
  }

  /** Writes to stdin; resolves once the bytes are in the pipe. */
  async write(data: Uint8Array): Promise<void> {
    const stdin = this.openStdin();
    await new Promise<void>((resolve, reject) => {
      stdin.write(data, (error) => {
        if (!error) resolve();
        else {
          reject(
            new ConnectError(
              `process ${this.pid} closed its stdin`,
              Code.FailedPrecondition,
              undefined,
              undefined,
              error,
            ),
          );
        }
      });
    });
  }

  /**
   * Closes stdin after the input already written (and `last`, if given), so the process reads
   * end-of-file. Succeeds if it is already closed or the process has exited. Does not wait for a
   * process that does not read.
   */
  closeStdin(last?: Uint8Array): void {
    if (!this.spec.stdin) throw this.noStdin();
    if (!this.stdinOpen) return;
    this.stdinOpen = false;
    if (last && last.length > 0) this.child.stdin?.end(last);
    else this.child.stdin?.end();
  }

  /** The process as the contract describes it. */
  info(): ProcessInfo {
    const { spec } = this;
    return create(ProcessInfoSchema, {
      pid: this.pid,
      tag: spec.tag,
      argv: spec.argv,
      shell: spec.shell,
      cwd: spec.cwd.relative,
      state: this.running ? ProcessState.RUNNING : ProcessState.EXITED,
      exit: this.exitStatus ? this.exitMessage() : undefined,
      timedOut: this.killedByTimeout,
      startedAt: timestampFromMs(this.startedAtMs),
      endedAt: this.endedAtMs === undefined ? undefined : timestampFromMs(this.endedAtMs),
      timeoutMs: spec.timeoutMs,
      stdinOpen: this.running && this.stdinOpen,
      stdoutTotalBytes: BigInt(this.stdout.end),
      stderrTotalBytes: BigInt(this.stderr.end),
      stdoutRetainedOffset: BigInt(this.stdout.start),
      stderrRetainedOffset: BigInt(this.stderr.start),
      attachedClients: this.attachedClients,
    });
  }

  /** The exit event; only meaningful once the process has exited. */
  exited(): ProcessExited {
    const endedAtMs = this.endedAtMs ?? this.options.clock();
    return create(ProcessExitedSchema, {
      status: this.exitMessage(),
      timedOut: this.killedByTimeout,
      endedAt: timestampFromMs(endedAtMs),
      durationMs: BigInt(Math.max(0, endedAtMs - this.startedAtMs)),
      stdoutTotalBytes: BigInt(this.stdout.end),
      stderrTotalBytes: BigInt(this.stderr.end),
      stdoutTruncated: this.stdout.start > 0,
      stderrTruncated: this.stderr.start > 0,
    });
  }

  private exitMessage() {
    const status = this.exitStatus;
    return create(ExitStatusSchema, {
      exitCode: status?.code ?? undefined,
      signal: status?.signal ?? "",
    });
  }

  private append(stream: OutputStreamName, data: Buffer): void {
    if (this.done) return;
    const chunk = this.buffer(stream).append(data, this.seq++);
    this.options.onOutput();
    for (const listener of this.listeners) listener.output(stream, chunk);
  }

  private expire(): void {
    if (!this.running) return;
    this.killedByTimeout = true;
    this.options.logger.info({ pid: this.pid, timeoutMs: this.spec.timeoutMs }, "process timed out");
    this.killQuietly("SIGKILL");
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.exitStatus = { code, signal };
    this.endedAtMs = this.options.clock();
    clearTimeout(this.deadline);
    this.stdinOpen = false;
    this.child.stdin?.destroy();
    this.options.logger.info({ pid: this.pid, code, signal, timedOut: this.killedByTimeout }, "process exited");
    // Output written just before the exit may still be in the pipes: wait for them to close,
    // but not for a background child that inherited them.
    let timer: NodeJS.Timeout | undefined;
    const drained = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.options.stdioDrainMs ?? 500);
      timer.unref();
    });
    void Promise.race([Promise.all([closed(this.child.stdout), closed(this.child.stderr)]), drained]).then(() => {
      clearTimeout(timer);
      this.finish();
    });
  }

  private finish(): void {
    this.done = true;
    for (const listener of this.listeners) listener.exit();
    this.listeners.clear();
    this.resolveFinished();
    this.options.onFinished(this);
  }

  private openStdin() {
    if (!this.spec.stdin) throw this.noStdin();
    if (!this.running) throw this.hasExited();
    if (!this.stdinOpen || !this.child.stdin) {
      throw new ConnectError(`the stdin of process ${this.pid} is closed`, Code.FailedPrecondition);
    }
    return this.child.stdin;
  }

  private noStdin(): ConnectError {
    return new ConnectError(
      `process ${this.pid} was started without stdin (set stdin_enabled)`,
      Code.FailedPrecondition,
    );
  }

  private hasExited(): ConnectError {
    return new ConnectError(`process ${this.pid} has already exited`, Code.FailedPrecondition);
  }
}

function closed(stream: Readable | null): Promise<void> {
  return new Promise((resolve) => {
    if (!stream || stream.closed) resolve();
    else stream.once("close", () => resolve());
  });
}
