import { DevexError, UnavailableError } from "../errors.js";
import { Reattach } from "./reattach.js";

/**
 * Sends one numbered chunk of input; resolves once the runner has applied it (or had applied that seq
 * before: a repeat is acknowledged without being applied again).
 */
export type SendInput = (data: Uint8Array, seq: bigint) => Promise<void>;

/** Options of {@link SequencedInput}. */
export interface SequencedInputOptions {
  /** The most bytes one chunk may carry: the server's limit on one write. */
  maxChunkBytes: number;
  /** How long a chunk is retried after its first failure that may be passing (no connection), in ms. */
  retryTimeoutMs: number;
  /** Stops the retries (the handle is finished). */
  signal: AbortSignal;
}

interface PendingWrite {
  data: Uint8Array;
  /** How many bytes of data are in chunks already. */
  taken: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

interface Chunk {
  data: Uint8Array;
  /** The writes with bytes in this chunk. */
  writes: PendingWrite[];
  /** Those whose last bytes are in this chunk: done once it is applied. */
  completes: PendingWrite[];
}

/**
 * Codes of failures that may pass: the write did not get through or its answer did not come back. An HTTP/2
 * stream reset by a dying connection arrives as internal or canceled (this class never cancels its calls).
 */
const transientCodes = new Set(["unavailable", "deadline_exceeded", "resource_exhausted", "internal", "canceled"]);

/**
 * A terminal client's input as numbered writes (WriteInput's client_id and seq), which the runner applies
 * in seq order and each seq once. Writes go out one chunk at a time, in order: a write larger than the
 * server takes is split, and writes made while a chunk is in flight are joined into the next chunk. A
 * chunk whose call fails while the runner may be out of reach is sent again with the same seq (so it is
 * applied once however many times it arrives) until it is acknowledged or `retryTimeoutMs` passes.
 *
 * A chunk that failed for good leaves its seq in doubt (applied if only the answer was lost). Before the
 * next chunk, that seq is settled with an empty write: a repeat if it had been applied, an empty write
 * otherwise. So the sequence never has a gap that would hold later writes up, and nothing is applied
 * twice or out of order.
 */
export class SequencedInput {
  private readonly queue: PendingWrite[] = [];
  private nextSeq = 1n;
  /** The seq of a chunk that failed and may or may not have been applied. */
  private unsettled: bigint | undefined;
  private pumping = false;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    private readonly send: SendInput,
    private readonly options: SequencedInputOptions,
  ) {}

  /** Queues `data` after the writes before it; resolves once the runner has applied all of it. */
  write(data: Uint8Array): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ data, taken: 0, resolve, reject });
      if (!this.pumping) void this.pump();
    });
  }

  /** Resolves once every write made so far has been applied or has failed. */
  async settled(): Promise<void> {
    if (this.pumping) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Sends the queue's chunks one after another; the flag drops in the same turn as the queue is found empty. */
  private async pump(): Promise<void> {
    this.pumping = true;
    while (this.queue.length > 0) {
      const chunk = this.take();
      if (chunk.data.length === 0) {
        for (const write of chunk.completes) write.resolve();
        continue;
      }
      let seq: bigint | undefined;
      try {
        if (this.unsettled !== undefined) {
          await this.deliver(new Uint8Array(0), this.unsettled);
          this.unsettled = undefined;
        }
        seq = this.nextSeq++;
        await this.deliver(chunk.data, seq);
        for (const write of chunk.completes) write.resolve();
      } catch (error) {
        if (seq !== undefined) this.unsettled = seq;
        // A write partly in this chunk fails whole: what is left of it is not sent.
        if (this.queue[0] && chunk.writes.includes(this.queue[0])) this.queue.shift();
        for (const write of chunk.writes) write.reject(error);
      }
    }
    this.pumping = false;
    for (const wake of this.idleWaiters.splice(0)) wake();
  }

  /** The next chunk: the queued bytes in order, up to maxChunkBytes. */
  private take(): Chunk {
    const parts: Uint8Array[] = [];
    const writes: PendingWrite[] = [];
    const completes: PendingWrite[] = [];
    let size = 0;
    for (let write = this.queue[0]; write && size < this.options.maxChunkBytes; write = this.queue[0]) {
      const part = write.data.subarray(write.taken, write.taken + this.options.maxChunkBytes - size);
      parts.push(part);
      writes.push(write);
      size += part.length;
      write.taken += part.length;
      if (write.taken < write.data.length) break;
      completes.push(write);
      this.queue.shift();
    }
    const data = parts.length === 1 ? (parts[0] ?? new Uint8Array(0)) : new Uint8Array(size);
    if (parts.length > 1) {
      let at = 0;
      for (const part of parts) {
        data.set(part, at);
        at += part.length;
      }
    }
    return { data, writes, completes };
  }

  /** Sends one chunk, again with the same seq while failures may pass. */
  private async deliver(data: Uint8Array, seq: bigint): Promise<void> {
    const retry = new Reattach(50, this.options.retryTimeoutMs, this.options.signal);
    for (;;) {
      try {
        return await this.send(data, seq);
      } catch (error) {
        if (!(error instanceof DevexError) || !transientCodes.has(error.code)) throw error;
        try {
          await retry.beforeRetry(error);
        } catch (final) {
          if (final !== error) throw final;
          throw new UnavailableError(
            `terminal input got no answer within ${this.options.retryTimeoutMs} ms (reconnectTimeoutMs): it was not applied, unless the runner received it and only the answer was lost (${error.message})`,
            { details: error.details, cause: error },
          );
        }
      }
    }
  }
}
