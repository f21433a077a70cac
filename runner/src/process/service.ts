import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  CloseProcessStdinResponseSchema,
  type ConnectProcessResponse,
  ConnectProcessResponseSchema,
  GetProcessResponseSchema,
  ListProcessesResponseSchema,
  OutputTruncation,
  ProcessConnectedSchema,
  type ProcessService,
  ProcessStartedSchema,
  ProcessState,
  RunProcessResponseSchema,
  SendProcessInputResponseSchema,
  SignalProcessResponseSchema,
  type StartProcessResponse,
  StartProcessResponseSchema,
} from "@devex/gen/devex/runner/v1/process_pb.js";
import { KeepaliveSchema } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { Channel } from "../channel.js";
import { processCgroupDirs } from "../config.js";
import { assertAcceptingWork, type RunnerContext } from "../context.js";
import { workspaceEnvironment } from "../environment.js";
import { pageOf } from "../pagination.js";
import { toNodeSignal } from "../signals.js";
import type { ManagedProcess, OutputStreamName, ProcessListener } from "./managed-process.js";
import { OutputCapture } from "./output-capture.js";
import { OutputSubscription } from "./output-subscription.js";
import { ProcessManager } from "./process-manager.js";

/** The processes of one runner. */
export interface ProcessPart {
  impl: Partial<ServiceImpl<typeof ProcessService>>;
  /** Processes running right now. */
  running(): number;
  /**
   * Ends every running process: SIGTERM to its process group, SIGKILL to those still
   * running after the grace period. Resolves with how many were stopped and how many of
   * them had to be killed.
   */
  shutdown(graceMs: number): Promise<{ stopped: number; killed: number }>;
}

/** RunProcess's output limit per stream when the request says 0 (the contract's default). */
const defaultRunOutputLimitBytes = 1024 * 1024;

/** Creates the ProcessService implementation for a runner. */
export function createProcessService(ctx: RunnerContext): ProcessPart {
  const { config } = ctx;
  const manager = new ProcessManager({
    workspace: ctx.workspace,
    environment: (extra) => workspaceEnvironment(ctx, extra),
    logger: ctx.logger.child({ component: "process" }),
    maxProcesses: config.maxProcesses,
    outputCapBytes: config.processOutputCapBytes,
    exitRetentionMs: config.exitRetentionMs,
    onOutput: () => ctx.activity.touch(),
    cgroups: processCgroupDirs(config),
  });

  /** A client's stream of events, with keepalives; it ends with the exit or when the client goes away. */
  function channelFor<E>(signal: AbortSignal): Channel<E> {
    return new Channel<E>({
      keepaliveMs: config.keepaliveMs,
      keepalive: () => ({ case: "keepalive", value: create(KeepaliveSchema, { sentAt: timestampNow() }) }) as E,
      signal,
    });
  }

  /** Hands the channel's events to the client and tells the subscription what it has taken. */
  async function* relay<E extends { case: string | undefined }, R>(
    channel: Channel<E>,
    subscription: OutputSubscription,
    toResponse: (event: E) => R,
  ): AsyncGenerator<R> {
    const detach = ctx.activity.attach();
    try {
      subscription.start();
      for await (const event of channel) {
        yield toResponse(event);
        subscription.consumed(event);
      }
    } finally {
      subscription.close();
      detach();
    }
  }

  const impl: ServiceImpl<typeof ProcessService> = {
    async *startProcess(req, call) {
      assertAcceptingWork(ctx);
      const process = await manager.start({
        config: required(req.config, "config"),
        stdin: req.stdinEnabled,
        retainedOutputBytes: Number(req.retainedOutputBytes),
      });
      const channel = channelFor<StartProcessResponse["event"]>(call.signal);
      const subscription = new OutputSubscription(process, channel, { stdout: 0, stderr: 0 });
      channel.push({ case: "started", value: create(ProcessStartedSchema, { process: process.info() }) });
      yield* relay(channel, subscription, (event) => create(StartProcessResponseSchema, { event }));
    },

    async runProcess(req, call) {
      assertAcceptingWork(ctx);
      const limit = Number(req.outputLimitBytes) || defaultRunOutputLimitBytes;
      const mode = req.outputTruncation === OutputTruncation.TAIL ? "tail" : "head";
      const capture = { stdout: new OutputCapture(limit, mode), stderr: new OutputCapture(limit, mode) };
      const listener: ProcessListener = {
        output: (stream: OutputStreamName, chunk) => capture[stream].add(chunk.data),
        exit: () => {},
      };
      const process = await manager.start({
        config: required(req.config, "config"),
        stdin: true,
        retainedOutputBytes: 0,
        listener,
      });
      process.closeStdin(req.stdin);
      await untilExit(process, call);
      const { status, timedOut, durationMs, endedAt } = process.exited();
      return create(RunProcessResponseSchema, {
        pid: process.pid,
        status,
        timedOut,
        stdout: capture.stdout.bytes(),
        stderr: capture.stderr.bytes(),
        stdoutTruncated: capture.stdout.truncated,
        stderrTruncated: capture.stderr.truncated,
        stdoutTotalBytes: BigInt(capture.stdout.totalBytes),
        stderrTotalBytes: BigInt(capture.stderr.totalBytes),
        durationMs,
        startedAt: process.info().startedAt,
        endedAt,
      });
    },

    getProcess(req) {
      return create(GetProcessResponseSchema, { process: manager.select(req.process).info() });
    },

    listProcesses(req) {
      const matching = manager
        .list()
        .filter(
          (process) =>
            req.state === ProcessState.UNSPECIFIED || process.running === (req.state === ProcessState.RUNNING),
        );
      const page = pageOf(matching, (process) => process.serial, req.pageSize, req.pageToken);
      return create(ListProcessesResponseSchema, {
        processes: page.items.map((process) => process.info()),
        nextPageToken: page.nextPageToken,
      });
    },

    async *connectProcess(req, call) {
      const process = manager.select(req.process);
      const stdout = replayStart(process, "stdout", req.stdoutOffset);
      const stderr = replayStart(process, "stderr", req.stderrOffset);
      const channel = channelFor<ConnectProcessResponse["event"]>(call.signal);
      const subscription = new OutputSubscription(process, channel, {
        stdout: stdout.offset,
        stderr: stderr.offset,
      });
      channel.push({
        case: "connected",
        value: create(ProcessConnectedSchema, {
          process: process.info(),
          stdoutOffset: BigInt(stdout.offset),
          stderrOffset: BigInt(stderr.offset),
          stdoutTruncated: stdout.truncated,
          stderrTruncated: stderr.truncated,
        }),
      });
      yield* relay(channel, subscription, (event) => create(ConnectProcessResponseSchema, { event }));
    },

    async sendProcessInput(req) {
      assertAcceptingWork(ctx);
      const process = manager.select(req.process);
      ctx.activity.touch();
      await process.write(req.data);
      return create(SendProcessInputResponseSchema);
    },

    closeProcessStdin(req) {
      manager.select(req.process).closeStdin();
      return create(CloseProcessStdinResponseSchema);
    },

    signalProcess(req) {
      const process = manager.select(req.process);
      process.kill(toNodeSignal(req.signal, "SIGTERM"), req.processGroup);
      return create(SignalProcessResponseSchema, { process: process.info() });
    },
  };

  return { impl, running: () => manager.running(), shutdown: (graceMs) => manager.shutdown(graceMs) };
}

/**
 * Waits for a RunProcess process to exit. If the call is cancelled or its deadline passes first,
 * the process group is killed (RunProcess never leaves a process behind) and the call fails.
 */
async function untilExit(process: ManagedProcess, call: HandlerContext): Promise<void> {
  const kill = () => process.killQuietly("SIGKILL");
  call.signal.addEventListener("abort", kill, { once: true });
  try {
    if (call.signal.aborted) kill();
    await process.finished;
  } finally {
    call.signal.removeEventListener("abort", kill);
  }
  if (call.signal.aborted) throw ConnectError.from(call.signal.reason, Code.Canceled);
}

/** Where a ConnectProcess replay of one stream starts, per the request's offset. */
function replayStart(
  process: ManagedProcess,
  stream: OutputStreamName,
  requested: bigint | undefined,
): { offset: number; truncated: boolean } {
  const buffer = process.buffer(stream);
  const from = requested === undefined ? 0 : Number(requested);
  if (from > buffer.end) {
    throw new ConnectError(
      `${stream}_offset ${from} is beyond the ${buffer.end} bytes written so far`,
      Code.OutOfRange,
    );
  }
  return { offset: Math.max(from, buffer.start), truncated: from < buffer.start };
}

function required<T>(value: T | undefined, field: string): T {
  if (value === undefined) throw new ConnectError(`${field}: value is required`, Code.InvalidArgument);
  return value;
}
