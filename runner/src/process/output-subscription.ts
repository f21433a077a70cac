import { create } from "@bufbuild/protobuf";
import {
  type ProcessExited,
  type ProcessOutput,
  type ProcessOutputLagged,
  ProcessOutputLaggedSchema,
  ProcessOutputSchema,
  ProcessStream,
} from "@devex/gen/devex/runner/v1/process_pb.js";
import type { Keepalive } from "@devex/gen/devex/runner/v1/runner_pb.js";
import type { ManagedProcess, OutputStreamName, ProcessListener } from "./managed-process.js";
import type { OutputChunk } from "./output-buffer.js";

/** The events that StartProcess and ConnectProcess streams have in common. */
export type ProcessEvent =
  | { case: "stdout"; value: ProcessOutput }
  | { case: "stderr"; value: ProcessOutput }
  | { case: "lagged"; value: ProcessOutputLagged }
  | { case: "exited"; value: ProcessExited }
  | { case: "keepalive"; value: Keepalive };

/** Where a subscription sends its events: the client's {@link Channel}. */
export interface EventSink {
  push(event: ProcessEvent): void;
  close(): void;
}

/**
 * The output bytes queued for one client before it counts as slow, by default. Enough to keep a
 * fast client busy between two pipe reads; small enough that many slow clients cost little.
 */
export const defaultClientQueueBytes = 256 * 1024;

const streams: readonly OutputStreamName[] = ["stdout", "stderr"];

/**
 * One client following a process's output, with flow control. While the client keeps up, each
 * chunk goes to it as soon as the process writes it. Once it has `queueBytes` of output queued
 * and not yet taken, nothing more is queued for it: it is caught up from the process's retained
 * output as it takes what is queued, and if that output was dropped in the meantime, it is told
 * so with a `lagged` event. So a slow client costs at most `queueBytes`, never holds the process
 * back, and never gets bytes out of order.
 */
export class OutputSubscription implements ProcessListener {
  private readonly cursor: Record<OutputStreamName, number>;
  private queuedBytes = 0;
  private live = false;
  private closed = false;

  /**
   * @param from the offsets to start from, between each buffer's start and end
   * @param queueBytes see {@link defaultClientQueueBytes}
   */
  constructor(
    private readonly process: ManagedProcess,
    private readonly sink: EventSink,
    from: Record<OutputStreamName, number>,
    private readonly queueBytes = defaultClientQueueBytes,
  ) {
    this.cursor = { ...from };
    process.attachedClients++;
  }

  /** Starts sending: the retained output from the start offsets, then live output and the exit. */
  start(): void {
    this.process.listen(this);
    this.pump();
  }

  /** Tells the subscription that the client has taken `event` off its queue. */
  consumed(event: { case: string | undefined; value?: unknown }): void {
    if (event.case === "stdout" || event.case === "stderr") {
      this.queuedBytes -= (event.value as ProcessOutput).data.length;
    }
    if (!this.live) this.pump();
  }

  /** Ends the subscription (the client went away, or the stream is over). Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.process.unlisten(this);
    this.process.attachedClients--;
    this.sink.close();
  }

  /** @inheritdoc */
  output(stream: OutputStreamName, chunk: OutputChunk): void {
    if (this.live && this.queuedBytes < this.queueBytes) this.send(stream, chunk);
    else this.live = false;
  }

  /** @inheritdoc */
  exit(): void {
    // A client still catching up gets the exit from pump(), after the output.
    if (this.live) this.end();
  }

  private pump(): void {
    while (!this.closed && this.queuedBytes < this.queueBytes) {
      const next = this.nextRetained();
      if (!next) {
        this.live = true;
        if (this.process.isFinished) this.end();
        return;
      }
      this.send(next.stream, next.chunk);
    }
  }

  /** The next chunk of retained output in the order it was written, after reporting any gap. */
  private nextRetained(): { stream: OutputStreamName; chunk: OutputChunk } | undefined {
    for (const stream of streams) {
      const start = this.process.buffer(stream).start;
      if (this.cursor[stream] < start) {
        this.sink.push({
          case: "lagged",
          value: create(ProcessOutputLaggedSchema, {
            stream: stream === "stdout" ? ProcessStream.STDOUT : ProcessStream.STDERR,
            fromOffset: BigInt(this.cursor[stream]),
            toOffset: BigInt(start),
          }),
        });
        this.cursor[stream] = start;
      }
    }
    const out = this.process.stdout.read(this.cursor.stdout);
    const err = this.process.stderr.read(this.cursor.stderr);
    if (out && (!err || out.seq < err.seq)) return { stream: "stdout", chunk: out };
    if (err) return { stream: "stderr", chunk: err };
    return undefined;
  }

  private send(stream: OutputStreamName, chunk: OutputChunk): void {
    this.cursor[stream] = chunk.offset + chunk.data.length;
    this.queuedBytes += chunk.data.length;
    this.sink.push({
      case: stream,
      value: create(ProcessOutputSchema, { data: chunk.data, offset: BigInt(chunk.offset) }),
    });
  }

  private end(): void {
    if (this.closed) return;
    this.sink.push({ case: "exited", value: this.process.exited() });
    this.close();
  }
}
