import type { ReplRepository } from "../repls/repository.js";

/** Where running repls' runners listen, for the repl origin. */
export interface RunnerEndpoints {
  /** The runner endpoint of a running repl; undefined when the repl is missing or not running. */
  resolve(replId: string): Promise<string | undefined>;
  /** Drops every subscription. */
  close(): Promise<void>;
}

/** How long an endpoint is trusted without a change message, should one be lost. */
const maxAgeMs = 10_000;

interface Entry {
  endpoint: string;
  readAtMs: number;
  unsubscribe: () => Promise<void>;
}

/**
 * Endpoints of running repls, read from the record once and kept until the repl's channel
 * reports any change (from any core replica), so a proxied call, such as each keystroke of
 * the browser form, costs no store read. Only running repls are kept: a start is seen at
 * the next call.
 */
export function createRunnerEndpoints(repository: ReplRepository, now: () => number = Date.now): RunnerEndpoints {
  const entries = new Map<string, Entry>();
  const forget = (replId: string, entry: Entry | undefined) => {
    if (!entry || entries.get(replId) !== entry) return;
    entries.delete(replId);
    void entry.unsubscribe();
  };

  return {
    async resolve(replId) {
      const cached = entries.get(replId);
      if (cached && now() - cached.readAtMs < maxAgeMs) return cached.endpoint;
      forget(replId, cached);
      const endpointOf = async () => {
        const current = await repository.get(replId);
        return current?.record.state === "running" ? current.record.runnerEndpoint : undefined;
      };
      // Only running repls are subscribed to (a call for an unknown id costs one read, no
      // subscription); the read after subscribing catches a change made in between.
      if (!(await endpointOf())) return undefined;
      let entry: Entry | undefined;
      let changed = false;
      const unsubscribe = await repository.subscribe(replId, () => {
        changed = true;
        forget(replId, entry);
      });
      const endpoint = await endpointOf();
      if (!endpoint || changed || entries.has(replId)) {
        await unsubscribe();
        return endpoint;
      }
      entry = { endpoint, readAtMs: now(), unsubscribe };
      entries.set(replId, entry);
      return endpoint;
    },
    async close() {
      const all = [...entries.values()];
      entries.clear();
      await Promise.all(all.map((entry) => entry.unsubscribe()));
    },
  };
}
