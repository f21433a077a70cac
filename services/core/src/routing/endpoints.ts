import type { ReplRepository, StoredRepl } from "../repls/repository.js";

/** Where running repls' runners listen, for the repl origin and the preview origin. */
export interface RunnerEndpoints {
  /** The runner endpoint of a running repl; undefined when the repl is missing or not running. */
  resolve(replId: string): Promise<string | undefined>;
  /** The record of a running repl (its owner, public ports, preview endpoint...); undefined otherwise. */
  running(replId: string): Promise<StoredRepl | undefined>;
  /** Drops every subscription. */
  close(): Promise<void>;
}

/** How long an endpoint is trusted without a change message, should one be lost. */
const maxAgeMs = 10_000;

interface Entry {
  record: StoredRepl;
  readAtMs: number;
  unsubscribe: () => Promise<void>;
}

/**
 * Records of running repls, read once and kept until the repl's channel reports any change
 * (from any core replica), so a proxied call, such as each keystroke of the browser form or
 * each asset of a preview, costs no store read. Only running repls are kept: a start is seen
 * at the next call.
 */
export function createRunnerEndpoints(repository: ReplRepository, now: () => number = Date.now): RunnerEndpoints {
  const entries = new Map<string, Entry>();
  const forget = (replId: string, entry: Entry | undefined) => {
    if (!entry || entries.get(replId) !== entry) return;
    entries.delete(replId);
    void entry.unsubscribe();
  };

  const running = async (replId: string): Promise<StoredRepl | undefined> => {
    const cached = entries.get(replId);
    if (cached && now() - cached.readAtMs < maxAgeMs) return cached.record;
    forget(replId, cached);
    const recordOf = async () => {
      const current = await repository.get(replId);
      return current?.record.state === "running" && current.record.runnerEndpoint ? current.record : undefined;
    };
    // Only running repls are subscribed to (a call for an unknown id costs one read, no
    // subscription); the read after subscribing catches a change made in between.
    if (!(await recordOf())) return undefined;
    let entry: Entry | undefined;
    let changed = false;
    const unsubscribe = await repository.subscribe(replId, () => {
      changed = true;
      forget(replId, entry);
    });
    const record = await recordOf();
    if (!record || changed || entries.has(replId)) {
      await unsubscribe();
      return record;
    }
    entry = { record, readAtMs: now(), unsubscribe };
    entries.set(replId, entry);
    return record;
  };

  return {
    running,
    async resolve(replId) {
      return (await running(replId))?.runnerEndpoint;
    },
    async close() {
      const all = [...entries.values()];
      entries.clear();
      await Promise.all(all.map((entry) => entry.unsubscribe()));
    },
  };
}
