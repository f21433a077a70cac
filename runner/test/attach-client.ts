import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  type AttachOpen,
  type AttachRequest,
  AttachRequestSchema,
  type AttachResponse,
  type TerminalService,
} from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { Channel } from "../src/channel.js";

/** A test client on one Attach stream: sends what it is told, records everything it receives. */
export class AttachClient {
  readonly events: AttachResponse["event"][] = [];
  private readonly chunks: Uint8Array[] = [];
  private received = 0;
  private joined: Buffer | undefined;
  firstOffset: bigint | undefined;
  error: unknown;
  done = false;
  private readonly requests = new Channel<AttachRequest>();
  private readonly abort = new AbortController();
  private readonly finished: Promise<void>;

  /**
   * `read: false` stops reading after `attached` until {@link startReading}; `readDelayMs` waits that long
   * after each output message, like a client slower than the program's output.
   */
  constructor(
    client: Client<typeof TerminalService>,
    open: Partial<AttachOpen>,
    options: { read?: boolean; readDelayMs?: number } = {},
  ) {
    this.requests.push(create(AttachRequestSchema, { kind: { case: "open", value: open as AttachOpen } }));
    const stream = client.attach(this.requests, { signal: this.abort.signal });
    this.finished = (async () => {
      try {
        for await (const res of stream) {
          this.events.push(res.event);
          // A client created with read: false stops reading after `attached`, like a stalled browser.
          if (options.read === false && res.event.case === "attached") await this.readGate;
          if (res.event.case === "output") {
            this.firstOffset ??= res.event.value.offset;
            this.chunks.push(res.event.value.data);
            this.received += res.event.value.data.length;
            this.joined = undefined;
            if (options.readDelayMs) await new Promise((resolve) => setTimeout(resolve, options.readDelayMs));
          }
        }
      } catch (error) {
        this.error = error;
      } finally {
        this.done = true;
      }
    })();
  }

  private releaseRead: () => void = () => {};
  private readonly readGate = new Promise<void>((resolve) => {
    this.releaseRead = resolve;
  });

  /** Starts reading, for a client created with `read: false`. */
  startReading(): void {
    this.releaseRead();
  }

  /** Output bytes received so far, in order (after any gap reported by `lagged`). */
  get output(): Buffer {
    this.joined ??= Buffer.concat(this.chunks);
    return this.joined;
  }

  /** How many output bytes were received. */
  get outputLength(): number {
    return this.received;
  }

  /** The output so far as text. */
  get text(): string {
    return this.output.toString("utf8");
  }

  /** The offset one past the last output byte received. */
  get endOffset(): bigint {
    const last = this.of("output").at(-1);
    return last ? last.offset + BigInt(last.data.length) : (this.firstOffset ?? 0n);
  }

  /** Events of one kind. */
  of<K extends NonNullable<AttachResponse["event"]["case"]>>(kind: K) {
    return this.events.filter((e) => e.case === kind).map((e) => e.value) as Extract<
      AttachResponse["event"],
      { case: K }
    >["value"][];
  }

  type(text: string | Uint8Array): void {
    const data = typeof text === "string" ? new TextEncoder().encode(text) : text;
    this.requests.push(create(AttachRequestSchema, { kind: { case: "input", value: { data } } }));
  }

  resize(cols: number, rows: number): void {
    this.requests.push(create(AttachRequestSchema, { kind: { case: "resize", value: { cols, rows } } }));
  }

  ping(nonce: bigint): void {
    this.requests.push(create(AttachRequestSchema, { kind: { case: "ping", value: { nonce } } }));
  }

  send(request: AttachRequest): void {
    this.requests.push(request);
  }

  /** Waits until the predicate holds (polling), or fails after `timeoutMs`. */
  async until(predicate: (c: this) => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this)) {
      if (this.done && !predicate(this)) {
        throw new Error(`stream ended before ${what}: ${String(this.error ?? "no error")}\n${this.text.slice(-2000)}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; output:\n${this.text.slice(-2000)}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Waits until the output contains `text`. */
  waitForText(text: string, timeoutMs?: number): Promise<void> {
    return this.until((c) => c.text.includes(text), JSON.stringify(text), timeoutMs);
  }

  /** Disconnects (cancels the stream) and waits for it to end. */
  async disconnect(): Promise<void> {
    this.abort.abort();
    this.requests.close();
    this.releaseRead();
    await this.finished;
  }

  /** Ends the request side and waits for the server to end the stream. */
  async finish(): Promise<void> {
    this.requests.close();
    await this.finished;
  }
}

/** A bash without rc files, so prompts and output are predictable. */
export const plainBash = ["bash", "--norc", "--noprofile", "-i"];
