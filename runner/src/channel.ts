/** Options for {@link Channel}. */
export interface ChannelOptions<T> {
  /** After this many ms without a message, a keepalive message is sent. */
  keepaliveMs?: number;
  /** Makes the keepalive message. */
  keepalive?: () => T;
  /** Closes the channel when aborted (the caller went away or the server is stopping). */
  signal?: AbortSignal;
}

/**
 * A queue between a producer that pushes (PTY output, process events, file events) and
 * one consumer that iterates (a response stream). Messages keep their order; a silent
 * channel yields keepalives so proxies do not cut the stream.
 */
export class Channel<T> implements AsyncIterable<T> {
  private readonly queue: T[] = [];
  private head = 0;
  private closed = false;
  private error: unknown;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly onAbort = () => this.close();

  constructor(private readonly options: ChannelOptions<T> = {}) {
    options.signal?.addEventListener("abort", this.onAbort, { once: true });
    if (options.signal?.aborted) this.close();
    this.arm();
  }

  /** Messages waiting to be consumed. */
  get size(): number {
    return this.queue.length - this.head;
  }

  /** Whether the channel no longer takes messages. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Adds a message; ignored once the channel is closed. */
  push(value: T): void {
    if (this.closed) return;
    this.queue.push(value);
    this.arm();
    this.wake?.();
  }

  /** Ends the stream after the messages already queued. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.options.signal?.removeEventListener("abort", this.onAbort);
    this.wake?.();
  }

  /** Ends the stream with an error after the messages already queued. */
  fail(error: unknown): void {
    if (this.closed) return;
    this.error = error;
    this.close();
  }

  private arm(): void {
    const { keepaliveMs, keepalive } = this.options;
    if (!keepaliveMs || !keepalive || this.closed) return;
    if (this.timer) {
      this.timer.refresh();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.push(keepalive());
    }, keepaliveMs);
    this.timer.unref();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    try {
      for (;;) {
        if (this.head < this.queue.length) {
          const value = this.queue[this.head] as T;
          this.queue[this.head] = undefined as T;
          this.head++;
          if (this.head > 1024 && this.head * 2 > this.queue.length) {
            this.queue.splice(0, this.head);
            this.head = 0;
          }
          yield value;
          continue;
        }
        if (this.closed) {
          if (this.error !== undefined) throw this.error;
          return;
        }
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
      }
    } finally {
      this.close();
    }
  }
}
