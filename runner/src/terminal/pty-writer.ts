import { writeSync } from "node:fs";

/** Retries on the next event-loop turn after a write the PTY did not take, before waiting {@link fullRetryMs}. */
const quickRetries = 8;
/** How long to wait before trying again once quick retries found the PTY's input buffer full, in ms. */
const fullRetryMs = 1;

/**
 * Writes input to a PTY master in order, on the event loop's thread. node-pty's own
 * `write` hands every chunk to libuv's thread pool (`fs.write`): a thread wake-up and an
 * extra event-loop turn per keystroke. node-pty opens the master non-blocking, so a direct
 * write completes at once or reports EAGAIN; what the kernel does not take stays queued,
 * in order, and is retried: on the next event-loop turn while the program reads (a paste),
 * every {@link fullRetryMs} while its input buffer stays full (a program that stopped reading).
 */
export class PtyWriter {
  private readonly queue: Uint8Array[] = [];
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Retries in a row that wrote nothing. */
  private fruitless = 0;

  /** @param fd the PTY master, opened non-blocking */
  constructor(private readonly fd: number) {}

  /** Writes `data` after the input already queued: at once if the PTY takes it. */
  write(data: Uint8Array): void {
    if (this.closed || data.byteLength === 0) return;
    if (this.queue.length > 0) {
      this.queue.push(data);
      return;
    }
    const written = this.writeSome(data);
    if (written === data.byteLength || this.closed) return;
    this.queue.push(data.subarray(written));
    this.fruitless = 0;
    this.schedule();
  }

  /** Drops queued input and stops retrying (the program exited). */
  close(): void {
    this.closed = true;
    this.queue.length = 0;
    clearImmediate(this.immediate);
    clearTimeout(this.timer);
  }

  /**
   * Writes as much of `data` as the PTY takes now. Any error but "try again" means the
   * program's side is gone (EIO): the writer closes, as the session's exit follows.
   */
  private writeSome(data: Uint8Array): number {
    try {
      return writeSync(this.fd, data);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "EAGAIN" && code !== "EWOULDBLOCK" && code !== "EINTR") this.close();
      return 0;
    }
  }

  private flush(): void {
    this.immediate = undefined;
    this.timer = undefined;
    let progressed = false;
    while (this.queue.length > 0) {
      const head = this.queue[0] as Uint8Array;
      const written = this.writeSome(head);
      if (this.closed) return;
      if (written > 0) progressed = true;
      if (written < head.byteLength) {
        this.queue[0] = head.subarray(written);
        this.fruitless = progressed ? 0 : this.fruitless + 1;
        this.schedule();
        return;
      }
      this.queue.shift();
    }
  }

  private schedule(): void {
    if (this.fruitless < quickRetries) this.immediate = setImmediate(() => this.flush());
    else this.timer = setTimeout(() => this.flush(), fullRetryMs);
  }
}
