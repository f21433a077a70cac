import { create, getOption } from "@bufbuild/protobuf";
import { field } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import type { AttachResponse, StreamOutputResponse } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import {
  type AttachRequest,
  AttachRequestSchema,
  SessionState,
  WriteInputRequestSchema,
} from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { toExit } from "./convert.js";
import { CancelledError } from "./errors.js";
import { AsyncQueue } from "./internal/async-queue.js";
import { allPages, type Context } from "./internal/context.js";
import { Reattach } from "./internal/reattach.js";
import { isUnauthenticated, type RunnerConnection } from "./internal/runner-connection.js";
import { SequencedInput } from "./internal/sequenced-input.js";
import type {
  CallOptions,
  ConnectTerminalOptions,
  CreateTerminalOptions,
  TerminalExit,
  TerminalHandle,
  TerminalInfo,
  TerminalLag,
  TerminalOutputOptions,
  Terminals,
} from "./types.js";

const encoder = new TextEncoder();

/** The most bytes one WriteInput takes: the proto's validation rule on its `data` (1 MiB). */
const maxWriteBytes = (() => {
  const rules = getOption(WriteInputRequestSchema.field.data, field).type;
  return rules.case === "bytes" && rules.value.maxLen ? Number(rules.value.maxLen) : 1_048_576;
})();

type TerminalEvent = AttachResponse["event"] | StreamOutputResponse["event"];

/** A full reset (RIS): what a terminal fed by `onData` needs before a snapshot redraws it after a gap. */
const fullReset = new Uint8Array([0x1b, 0x63]);

/**
 * Where a stream's output starts: replay from an offset, or else a screen snapshot (of the current screen
 * without an offset; in place of what has left the scrollback with one).
 */
interface StartAt {
  fromOffset?: bigint;
  /** Resize the session to this before attaching (the first open of connect). */
  size?: { cols: number; rows: number };
}

/** Terminal sessions in a running repl, over TerminalService. */
export class TerminalsModule implements Terminals {
  constructor(
    private readonly context: Context,
    private readonly runner: RunnerConnection,
  ) {}

  async create(options: CreateTerminalOptions = {}): Promise<TerminalHandle> {
    const { session } = await this.runner.call(
      ({ terminals }, call) =>
        terminals.createSession(
          {
            spec: {
              command: options.command ?? [],
              cwd: options.cwd ?? "",
              env: options.env ?? {},
              cols: options.cols ?? 0,
              rows: options.rows ?? 0,
            },
          },
          call,
        ),
      options.signal,
    );
    const handle = new TerminalSession(this.context, this.runner, session?.id ?? "", options);
    await handle.attach({ fromOffset: 0n }, options.signal);
    return handle;
  }

  async connect(sessionId: string, options: ConnectTerminalOptions = {}): Promise<TerminalHandle> {
    const handle = new TerminalSession(this.context, this.runner, sessionId, options);
    const startAt: StartAt = options.fromOffset === undefined ? {} : { fromOffset: BigInt(options.fromOffset) };
    if (options.cols !== undefined && options.rows !== undefined)
      startAt.size = { cols: options.cols, rows: options.rows };
    await handle.attach(startAt, options.signal);
    return handle;
  }

  list(options: CallOptions = {}): Promise<TerminalInfo[]> {
    return this.runner.call(
      ({ terminals }, call) =>
        allPages(async (pageToken) => {
          const response = await terminals.listSessions({ pageToken, pageSize: 1000 }, call);
          return {
            items: response.sessions.map((session) => ({
              id: session.id,
              cols: session.cols,
              rows: session.rows,
              running: session.state === SessionState.RUNNING,
              attachedClients: session.attachedClients,
            })),
            next: response.nextPageToken,
          };
        }),
      options.signal,
    );
  }
}

/**
 * One attached client of a session. Output comes from Attach (Node, HTTP/2) or StreamOutput (browsers); a
 * dropped stream is reopened from the offset of the next byte not yet delivered, so `onData` receives every
 * byte exactly once and in order, unless the runner skipped some (`lagged`, or a reattach too late for the
 * scrollback): then `onLag` says how many, and `onData` receives a redraw of the screen. Input goes through WriteInput with this client's id and a sequence
 * number (see {@link SequencedInput}): its answer confirms that the runner applied it, and a write sent
 * again after a failure is applied once. The Attach stream carries no input, since nothing there
 * acknowledges it.
 */
class TerminalSession implements TerminalHandle {
  private nextOffset = 0n;
  /** The offset the stream being opened was asked to start from, if any. */
  private askedFrom: bigint | undefined;
  private readonly clientId = crypto.randomUUID();
  private readonly input: SequencedInput;
  private readonly detach = new AbortController();
  private detaching = false;
  private readonly exit: Promise<TerminalExit>;
  private settle!: { resolve: (exit: TerminalExit) => void; reject: (error: unknown) => void };

  constructor(
    private readonly context: Context,
    private readonly runner: RunnerConnection,
    readonly id: string,
    private readonly output: TerminalOutputOptions,
  ) {
    this.exit = new Promise<TerminalExit>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.exit.catch(() => {});
    this.input = new SequencedInput(
      (data, seq) =>
        this.runner
          .call(
            ({ terminals }, call) =>
              terminals.writeInput({ sessionId: this.id, data, clientId: this.clientId, seq }, call),
            undefined,
          )
          .then(() => {}),
      { maxChunkBytes: maxWriteBytes, retryTimeoutMs: context.reconnectTimeoutMs, signal: this.detach.signal },
    );
  }

  get offset(): number {
    return Number(this.nextOffset);
  }

  /** Opens the first stream and resolves once attached; the rest is followed in the background. */
  async attach(startAt: StartAt, signal: AbortSignal | undefined): Promise<void> {
    let iterator: AsyncIterator<TerminalEvent>;
    try {
      iterator = await this.open(startAt, signal ? AbortSignal.any([signal, this.detach.signal]) : this.detach.signal);
      const first = await iterator.next();
      if (first.done || first.value.case !== "attached") throw new Error("the terminal stream did not attach");
      this.handle(first.value);
    } catch (error) {
      this.detach.abort();
      throw this.context.error(error, signal);
    }
    void this.follow(iterator);
  }

  /** A stream of the session's output from `startAt`: Attach where the transport has full duplex, else StreamOutput. */
  private async open(startAt: StartAt, signal: AbortSignal): Promise<AsyncIterator<TerminalEvent>> {
    const { terminals } = await this.runner.clients(signal);
    // Snapshots always: the runner sends one only where raw replay cannot be had (the start of connect without
    // an offset, an offset that left the scrollback, a gap after this client fell behind others).
    const replay = {
      screenSnapshot: true,
      ...(startAt.fromOffset === undefined ? {} : { fromOffset: startAt.fromOffset }),
    };
    this.askedFrom = startAt.fromOffset;
    if (!this.context.platform.fullDuplex) {
      // StreamOutput takes no size: the session is resized first.
      if (startAt.size) await terminals.resizeSession({ sessionId: this.id, ...startAt.size }, { signal });
      const responses = terminals.streamOutput({ sessionId: this.id, ...replay }, { signal })[Symbol.asyncIterator]();
      return {
        next: async () => {
          const next = await responses.next();
          return next.done ? next : { done: false, value: next.value.event };
        },
      };
    }
    const requests = new AsyncQueue<AttachRequest>();
    requests.push(
      create(AttachRequestSchema, {
        kind: { case: "open", value: { ...replay, ...startAt.size, target: { case: "sessionId", value: this.id } } },
      }),
    );
    signal.addEventListener("abort", () => requests.close(), { once: true });
    const responses = terminals.attach(requests, { signal })[Symbol.asyncIterator]();
    // The request side carries only `open`; it ends with the stream.
    return {
      next: async () => {
        try {
          const next = await responses.next();
          if (next.done) requests.close();
          return next.done ? next : { done: false, value: next.value.event };
        } catch (error) {
          requests.close();
          throw error;
        }
      },
    };
  }

  /** Reads streams until the program exits, reattaching from nextOffset after a drop. */
  private async follow(first: AsyncIterator<TerminalEvent>): Promise<void> {
    let iterator: AsyncIterator<TerminalEvent> | undefined = first;
    const reattach = new Reattach(50, this.context.reconnectTimeoutMs, this.detach.signal);
    for (;;) {
      const streamAbort = new AbortController();
      const signal = AbortSignal.any([this.detach.signal, streamAbort.signal]);
      try {
        iterator ??= await this.open({ fromOffset: this.nextOffset }, signal);
        for (;;) {
          const next = await iterator.next();
          if (next.done) break;
          if (next.value.case === "attached") reattach.attached();
          const exit = this.handle(next.value);
          if (exit) {
            this.settle.resolve(exit);
            // Ends this stream's request side too, so no call stays open.
            this.detach.abort();
            this.output.onExit?.(exit);
            return;
          }
        }
        iterator = undefined;
        if (this.detaching) return this.settle.reject(new CancelledError("the handle was disconnected"));
      } catch (error) {
        iterator = undefined;
        streamAbort.abort();
        if (this.detach.signal.aborted || this.detaching) {
          return this.settle.reject(new CancelledError("the handle was disconnected", { cause: error }));
        }
        if (isUnauthenticated(error)) this.runner.invalidate();
        const mapped = this.context.error(error);
        try {
          await reattach.beforeRetry(mapped);
        } catch (final) {
          return this.settle.reject(final);
        }
      }
    }
  }

  /** Applies one event; returns the exit when it is the last. */
  private handle(event: TerminalEvent): TerminalExit | undefined {
    switch (event.case) {
      case "attached": {
        const { offset, snapshot } = event.value;
        // Output from an offset asked for that starts later is a gap; a snapshot without one is the screen asked for.
        if (this.askedFrom !== undefined && offset > this.askedFrom) this.skip(this.askedFrom, offset, snapshot?.data);
        else if (snapshot && snapshot.data.length > 0) this.output.onData?.(snapshot.data);
        this.nextOffset = offset;
        return undefined;
      }
      case "output": {
        const { data, offset } = event.value;
        const end = offset + BigInt(data.length);
        if (end <= this.nextOffset) return undefined;
        const fresh = offset < this.nextOffset ? data.subarray(Number(this.nextOffset - offset)) : data;
        this.nextOffset = end;
        this.output.onData?.(fresh);
        return undefined;
      }
      case "lagged":
        this.skip(event.value.skippedFromOffset, event.value.resumeOffset, event.value.snapshot?.data);
        this.nextOffset = event.value.resumeOffset;
        return undefined;
      case "exit":
        return toExit(event.value.status);
      default:
        return undefined;
    }
  }

  /** Tells `onLag` that the output from `from` to `resume` was skipped, then redraws the screen if a snapshot came. */
  private skip(from: bigint, resume: bigint, snapshot: Uint8Array | undefined): void {
    const redraw = snapshot !== undefined && snapshot.length > 0;
    const lag: TerminalLag = {
      skippedBytes: Number(resume - from),
      fromOffset: Number(from),
      resumeOffset: Number(resume),
      snapshot: redraw,
    };
    this.output.onLag?.(lag);
    if (!redraw) return;
    this.output.onData?.(fullReset);
    this.output.onData?.(snapshot);
  }

  write(data: string | Uint8Array): Promise<void> {
    return this.input.write(typeof data === "string" ? encoder.encode(data) : data);
  }

  async resize(cols: number, rows: number): Promise<void> {
    await this.runner.call(
      ({ terminals }, call) => terminals.resizeSession({ sessionId: this.id, cols, rows }, call),
      undefined,
    );
  }

  wait(): Promise<TerminalExit> {
    return this.exit;
  }

  async disconnect(): Promise<void> {
    await this.input.settled();
    this.detaching = true;
    this.detach.abort();
    await this.exit.catch(() => {});
  }

  async kill(): Promise<void> {
    await this.runner.call(({ terminals }, call) => terminals.closeSession({ sessionId: this.id }, call), undefined);
    await this.exit.catch(() => {});
  }
}
