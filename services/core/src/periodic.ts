/** A background pass run every interval, never two at once. */
export interface Periodic {
  /** Starts running the pass every `intervalMs` (and at once with `immediately`); a no-op when started. */
  start(intervalMs: number, immediately?: boolean): void;
  /** Stops the timer and waits for a pass in progress to end. */
  stop(): Promise<void>;
}

/**
 * Runs `pass` periodically. A tick that comes while the previous pass still runs is
 * skipped, so a slow pass (a store outage, a hung runner) never piles up concurrent ones.
 */
export function createPeriodic(pass: () => Promise<unknown>): Periodic {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> | undefined;
  const tick = () => {
    running ??= pass()
      .catch(() => {})
      .finally(() => {
        running = undefined;
      });
  };
  return {
    start(intervalMs, immediately = false) {
      if (timer) return;
      if (immediately) tick();
      timer = setInterval(tick, intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await running;
    },
  };
}
