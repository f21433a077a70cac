import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ConnectProcessResponse,
  ProcessConfigSchema,
  ProcessExited,
  ProcessSelectorSchema,
  StartProcessResponse,
} from "@devex/gen/devex/runner/v1/process_pb.js";
import { ProcessState, ProcessStream } from "@devex/gen/devex/runner/v1/process_pb.js";
import { Signal } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { CancelledError, InvalidArgumentError } from "./errors.js";
import { allPages, type Context } from "./internal/context.js";
import { Reattach } from "./internal/reattach.js";
import { isUnauthenticated, type RunnerConnection } from "./internal/runner-connection.js";
import type {
  CallOptions,
  CommandHandle,
  CommandInfo,
  CommandOutputOptions,
  CommandResult,
  Commands,
  RunCommandOptions,
  StartCommandOptions,
} from "./types.js";

const encoder = new TextEncoder();

type ProcessEvent = StartProcessResponse["event"] | ConnectProcessResponse["event"];

/** The events of a process stream. */
async function* events(
  stream: AsyncIterable<StartProcessResponse | ConnectProcessResponse>,
): AsyncIterable<ProcessEvent> {
  for await (const message of stream) yield message.event;
}

/** What to run: a string through `bash -lc`, an array directly. */
function processConfig(
  command: string | string[],
  options: { cwd?: string; env?: Record<string, string>; tag?: string; timeoutMs?: number },
): MessageInitShape<typeof ProcessConfigSchema> {
  return {
    ...(typeof command === "string" ? { shell: command } : { argv: command }),
    cwd: options.cwd ?? "",
    env: options.env ?? {},
    tag: options.tag ?? "",
    timeoutMs: options.timeoutMs ?? 0,
  };
}

/** Commands in a running repl, over ProcessService. */
export class CommandsModule implements Commands {
  constructor(
    private readonly context: Context,
    private readonly runner: RunnerConnection,
  ) {}

  async run(command: string | string[], options: RunCommandOptions = {}): Promise<CommandResult> {
    const decoder = new TextDecoder();
    const response = await this.runner.call(
      ({ processes }, call) =>
        processes.runProcess(
          { config: processConfig(command, options), outputLimitBytes: BigInt(options.maxOutputBytes ?? 0) },
          call,
        ),
      options.signal,
      // Bounded by its own timeoutMs (the runner kills it), not by requestTimeoutMs.
      undefined,
    );
    return {
      stdout: decoder.decode(response.stdout),
      stderr: decoder.decode(response.stderr),
      exitCode: response.status?.exitCode ?? null,
      ...(response.status?.signal ? { signal: response.status.signal } : {}),
      truncated: response.stdoutTruncated || response.stderrTruncated,
      timedOut: response.timedOut,
    };
  }

  async start(command: string | string[], options: StartCommandOptions = {}): Promise<CommandHandle> {
    const handle = new ProcessHandle(this.context, this.runner, options);
    await handle.open(async (signal) => {
      const { processes } = await this.runner.clients(signal);
      return events(
        processes.startProcess(
          { config: processConfig(command, options), stdinEnabled: options.stdin ?? false },
          { signal },
        ),
      );
    }, options.signal);
    return handle;
  }

  async connect(pidOrTag: number | string, options: CommandOutputOptions & CallOptions = {}): Promise<CommandHandle> {
    const handle = new ProcessHandle(this.context, this.runner, options);
    const process: MessageInitShape<typeof ProcessSelectorSchema> = {
      selector: typeof pidOrTag === "number" ? { case: "pid", value: pidOrTag } : { case: "tag", value: pidOrTag },
    };
    await handle.open(async (signal) => {
      const { processes } = await this.runner.clients(signal);
      return events(processes.connectProcess({ process }, { signal }));
    }, options.signal);
    return handle;
  }

  list(options: CallOptions = {}): Promise<CommandInfo[]> {
    return this.runner.call(
      ({ processes }, call) =>
        allPages(async (pageToken) => {
          const response = await processes.listProcesses({ pageToken, pageSize: 1000 }, call);
          return {
            items: response.processes.map((info) => ({
              pid: info.pid,
              tag: info.tag,
              command: [...info.argv],
              running: info.state === ProcessState.RUNNING,
              ...(info.exit?.exitCode === undefined ? {} : { exitCode: info.exit.exitCode }),
            })),
            next: response.nextPageToken,
          };
        }),
      options.signal,
    );
  }
}

const signals: Record<string, Signal> = {
  TERM: Signal.TERM,
  KILL: Signal.KILL,
  INT: Signal.INT,
  HUP: Signal.HUP,
  QUIT: Signal.QUIT,
  USR1: Signal.USR1,
  USR2: Signal.USR2,
  STOP: Signal.STOP,
  CONT: Signal.CONT,
  WINCH: Signal.WINCH,
};

/**
 * One client's view of a process: output to the callbacks and into the result, and a stream that is
 * reconnected from the last offsets it received when the connection drops.
 */
class ProcessHandle implements CommandHandle {
  pid = 0;
  private readonly stdout: Uint8Array[] = [];
  private readonly stderr: Uint8Array[] = [];
  private stdoutOffset = 0n;
  private stderrOffset = 0n;
  private truncated = false;
  private readonly detach = new AbortController();
  private readonly result: Promise<CommandResult>;
  private settle!: { resolve: (result: CommandResult) => void; reject: (error: unknown) => void };

  constructor(
    private readonly context: Context,
    private readonly runner: RunnerConnection,
    private readonly output: CommandOutputOptions,
  ) {
    this.result = new Promise<CommandResult>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // wait() may never be called; its rejection must not be unhandled.
    this.result.catch(() => {});
  }

  /** Opens the first stream and resolves once the process is known; the rest is followed in the background. */
  async open(
    openStream: (signal: AbortSignal) => Promise<AsyncIterable<ProcessEvent>>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const opening = signal ? AbortSignal.any([signal, this.detach.signal]) : this.detach.signal;
    let iterator: AsyncIterator<ProcessEvent>;
    try {
      iterator = (await openStream(opening))[Symbol.asyncIterator]();
      const first = await iterator.next();
      if (first.done) throw new Error("the process stream ended before it started");
      this.handle(first.value);
    } catch (error) {
      this.detach.abort();
      throw this.context.error(error, signal);
    }
    void this.follow(iterator);
  }

  /** Reads the stream to its end, reconnecting with ConnectProcess from the received offsets after a drop. */
  private async follow(first: AsyncIterator<ProcessEvent>): Promise<void> {
    let iterator: AsyncIterator<ProcessEvent> | undefined = first;
    const reattach = new Reattach(100, this.context.reconnectTimeoutMs, this.detach.signal);
    for (;;) {
      try {
        if (!iterator) {
          const { processes } = await this.runner.clients(this.detach.signal);
          iterator = events(
            processes.connectProcess(
              {
                process: { selector: { case: "pid", value: this.pid } },
                stdoutOffset: this.stdoutOffset,
                stderrOffset: this.stderrOffset,
              },
              { signal: this.detach.signal },
            ),
          )[Symbol.asyncIterator]();
        }
        for (;;) {
          const next: IteratorResult<ProcessEvent> = await iterator.next();
          if (next.done) break;
          reattach.attached();
          const exited = this.handle(next.value);
          if (exited) return this.finish(exited);
        }
        iterator = undefined;
      } catch (error) {
        iterator = undefined;
        if (this.detach.signal.aborted) {
          return this.settle.reject(new CancelledError("the handle was disconnected", { cause: error }));
        }
        const mapped = this.context.error(error);
        if (isUnauthenticated(error)) this.runner.invalidate();
        try {
          await reattach.beforeRetry(mapped);
        } catch (final) {
          return this.settle.reject(final);
        }
      }
    }
  }

  /** Applies one event; returns the exit when it is the last. */
  private handle(event: ProcessEvent): ProcessExited | undefined {
    switch (event.case) {
      case "started":
        this.pid = event.value.process?.pid ?? 0;
        return undefined;
      case "connected":
        this.pid = event.value.process?.pid ?? 0;
        if (event.value.stdoutTruncated || event.value.stderrTruncated) this.truncated = true;
        this.stdoutOffset = event.value.stdoutOffset;
        this.stderrOffset = event.value.stderrOffset;
        return undefined;
      case "stdout":
        this.stdoutOffset = this.receive(event.value, this.stdoutOffset, this.stdout, this.output.onStdout);
        return undefined;
      case "stderr":
        this.stderrOffset = this.receive(event.value, this.stderrOffset, this.stderr, this.output.onStderr);
        return undefined;
      case "lagged":
        this.truncated = true;
        if (event.value.stream === ProcessStream.STDOUT) this.stdoutOffset = event.value.toOffset;
        else this.stderrOffset = event.value.toOffset;
        return undefined;
      case "exited":
        return event.value;
      default:
        return undefined;
    }
  }

  /** Delivers the part of a chunk not received yet; returns the new offset. */
  private receive(
    chunk: { data: Uint8Array; offset: bigint },
    offset: bigint,
    into: Uint8Array[],
    callback: ((data: Uint8Array) => void) | undefined,
  ): bigint {
    const end = chunk.offset + BigInt(chunk.data.length);
    if (end <= offset) return offset;
    const fresh = chunk.offset < offset ? chunk.data.subarray(Number(offset - chunk.offset)) : chunk.data;
    into.push(fresh);
    callback?.(fresh);
    return end;
  }

  private finish(exited: ProcessExited): void {
    const text = (chunks: Uint8Array[]) => {
      const decoder = new TextDecoder();
      return chunks.map((chunk) => decoder.decode(chunk, { stream: true })).join("") + decoder.decode();
    };
    this.settle.resolve({
      stdout: text(this.stdout),
      stderr: text(this.stderr),
      exitCode: exited.status?.exitCode ?? null,
      ...(exited.status?.signal ? { signal: exited.status.signal } : {}),
      truncated: this.truncated,
      timedOut: exited.timedOut,
    });
    this.detach.abort();
  }

  wait(): Promise<CommandResult> {
    return this.result;
  }

  async kill(signal = "KILL"): Promise<void> {
    const value = signals[signal.toUpperCase().replace(/^SIG/, "")];
    if (value === undefined) throw new InvalidArgumentError(`unknown signal ${signal}`, { field: "signal" });
    await this.runner.call(
      ({ processes }, call) =>
        processes.signalProcess(
          { process: { selector: { case: "pid", value: this.pid } }, signal: value, processGroup: true },
          call,
        ),
      undefined,
    );
  }

  async sendInput(data: string | Uint8Array): Promise<void> {
    await this.runner.call(
      ({ processes }, call) =>
        processes.sendProcessInput(
          {
            process: { selector: { case: "pid", value: this.pid } },
            data: typeof data === "string" ? encoder.encode(data) : data,
          },
          call,
        ),
      undefined,
    );
  }

  async closeStdin(): Promise<void> {
    await this.runner.call(
      ({ processes }, call) =>
        processes.closeProcessStdin({ process: { selector: { case: "pid", value: this.pid } } }, call),
      undefined,
    );
  }

  disconnect(): void {
    this.detach.abort();
  }
}
