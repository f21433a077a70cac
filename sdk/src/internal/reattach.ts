import { CancelledError, type DevexError, NotFoundError } from "../errors.js";
import { sleep } from "./context.js";

/**
 * When a dropped stream (a terminal's Attach, a command's output) is reattached: with a
 * backoff from `firstDelayMs` doubling to 2 s, for at most `timeoutMs` after the drop, and
 * never after NotFound (the session or process is gone) or once `signal` (the handle's
 * disconnect) aborts.
 */
export class Reattach {
  private droppedAtMs: number | undefined;
  private delayMs: number;

  constructor(
    private readonly firstDelayMs: number,
    private readonly timeoutMs: number,
    private readonly signal: AbortSignal,
  ) {
    this.delayMs = firstDelayMs;
  }

  /** The stream is attached again: the next drop starts a new backoff. */
  attached(): void {
    this.droppedAtMs = undefined;
    this.delayMs = this.firstDelayMs;
  }

  /**
   * Waits before the next attempt after a drop that failed with `error`; throws `error`
   * when it is final or the time is up, and CancelledError when the handle is disconnected.
   */
  async beforeRetry(error: DevexError): Promise<void> {
    this.droppedAtMs ??= Date.now();
    if (error instanceof NotFoundError || Date.now() - this.droppedAtMs > this.timeoutMs) throw error;
    try {
      await sleep(this.delayMs, this.signal);
    } catch {
      throw new CancelledError("the handle was disconnected");
    }
    this.delayMs = Math.min(this.delayMs * 2, 2_000);
  }
}
