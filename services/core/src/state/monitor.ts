import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { createPeriodic } from "../periodic.js";
import type { StateStore } from "./store.js";

/** Options for {@link createStateMonitor}. */
export interface StateMonitorOptions {
  /** How often the store is pinged, in ms. Default 1000. */
  checkIntervalMs?: number;
  logger?: Logger;
}

/** Whether the state store can be used right now, as {@link createStateMonitor} sees it. */
export interface StateMonitor {
  /**
   * The store as the rest of core uses it: a call that fails marks the store unusable at once
   * and throws `unavailable`, naming the cause (a ConnectError the store threw passes as it is).
   */
  readonly store: StateStore;
  /** False from a failed call or ping until a ping succeeds again. */
  healthy(): boolean;
  /** Calls `listener` on every change of {@link StateMonitor.healthy}. */
  onChange(listener: (healthy: boolean) => void): void;
  /** Pings now, then every check interval. */
  start(): void;
  /** Stops pinging; no change is reported afterwards. */
  stop(): Promise<void>;
}

/**
 * Watches the state store for core's health: every failed call marks it unusable at once, and
 * only a successful {@link StateStore.ping} (Redis answering, the embedded journal writable
 * again) marks it usable, so health does not flap on a read that happens to work while writes
 * fail. Calls are never held back: a driver fails fast on its own (see the drivers), and the
 * first call that works after an outage need not wait for the next ping.
 */
export function createStateMonitor(inner: StateStore, options: StateMonitorOptions = {}): StateMonitor {
  const { logger } = options;
  const checkIntervalMs = options.checkIntervalMs ?? 1000;
  const listeners = new Set<(healthy: boolean) => void>();
  let healthy = true;
  let stopped = false;

  const set = (next: boolean, cause?: unknown) => {
    if (next === healthy || stopped) return;
    healthy = next;
    if (next) logger?.info({ driver: inner.driver }, "state store usable again; serving");
    else logger?.error({ err: cause, driver: inner.driver }, "state store unusable; not serving until it answers");
    for (const listener of listeners) listener(next);
  };

  /** Runs a call of the store; its failure is noticed and thrown as `unavailable`. */
  const guard = async <T>(call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (error) {
      if (error instanceof ConnectError) throw error;
      set(false, error);
      const message = error instanceof Error ? error.message : String(error);
      throw new ConnectError(
        `the state store is unavailable (${message}); try again later`,
        Code.Unavailable,
        undefined,
        undefined,
        error,
      );
    }
  };

  const check = async () => {
    const answered = await inner.ping().catch(() => false);
    set(answered, answered ? undefined : new Error(`the ${inner.driver} state store does not answer its ping`));
  };
  const periodic = createPeriodic(check);

  const store: StateStore = {
    driver: inner.driver,
    get: (key) => guard(() => inner.get(key)),
    getMany: (keys) => guard(() => inner.getMany(keys)),
    commit: (transaction) => guard(() => inner.commit(transaction)),
    range: (index, rangeOptions) => guard(() => inner.range(index, rangeOptions)),
    count: (index) => guard(() => inner.count(index)),
    hit: (key, windowMs) => guard(() => inner.hit(key, windowMs)),
    publish: (channel, message) => guard(() => inner.publish(channel, message)),
    async subscribe(channel, listener) {
      const unsubscribe = await guard(() => inner.subscribe(channel, listener));
      return () => guard(unsubscribe);
    },
    ping: () => inner.ping(),
    close: () => inner.close(),
  };

  return {
    store,
    healthy: () => healthy,
    onChange(listener) {
      listeners.add(listener);
    },
    start() {
      periodic.start(checkIntervalMs, true);
    },
    async stop() {
      stopped = true;
      await periodic.stop();
    },
  };
}
