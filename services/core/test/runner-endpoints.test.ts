import { afterEach, describe, expect, it } from "vitest";
import type { ReplStateName } from "../src/model.js";
import { createReplRepository, type StoredRepl } from "../src/repls/repository.js";
import { createRunnerEndpoints } from "../src/routing/endpoints.js";
import { createEmbeddedStore, type StateStore } from "../src/state/index.js";

let store: StateStore;
afterEach(async () => {
  await store?.close();
});

function repl(id: string, state: ReplStateName, runnerEndpoint?: string): StoredRepl {
  return {
    id,
    name: "r",
    ownerUserId: "usr_00000000000000000000000000",
    templateName: "blank",
    state,
    failureReason: "",
    createdAtMs: 0,
    updatedAtMs: 0,
    idleTimeoutMs: 0,
    currentSnapshotId: "",
    labels: {},
    ...(runnerEndpoint ? { runnerEndpoint } : {}),
  };
}

/** Counts the store reads of repl records. */
function countingReads(inner: StateStore): { store: StateStore; reads: () => number } {
  let reads = 0;
  return {
    store: {
      ...inner,
      driver: inner.driver,
      getMany(keys) {
        if (keys.some((key) => key.startsWith("repl:"))) reads++;
        return inner.getMany(keys);
      },
      get(key) {
        if (key.startsWith("repl:")) reads++;
        return inner.get(key);
      },
    },
    reads: () => reads,
  };
}

describe("runner endpoints for the repl origin", () => {
  it("reads a running repl's endpoint once, and again only after the repl changed", async () => {
    store = await createEmbeddedStore();
    const counted = countingReads(store);
    const repository = createReplRepository({ store: counted.store });
    const id = `repl_${"1".repeat(26)}`;
    await repository.create(repl(id, "created"), 10);
    await repository.update(id, ({ record }) => ({ ...record, state: "starting" }));
    await repository.update(id, ({ record }) => ({
      ...record,
      state: "running",
      runnerEndpoint: "http://127.0.0.1:1",
    }));
    const endpoints = createRunnerEndpoints(repository);

    expect(await endpoints.resolve(id)).toBe("http://127.0.0.1:1");
    const afterFirst = counted.reads();
    for (let i = 0; i < 50; i++) expect(await endpoints.resolve(id)).toBe("http://127.0.0.1:1");
    // The preview origin reads the same cached record (owner, public ports, preview endpoint).
    for (let i = 0; i < 50; i++) expect(await endpoints.running(id)).toMatchObject({ id, state: "running" });
    expect(counted.reads()).toBe(afterFirst);

    await repository.update(id, ({ record }) => {
      const { runnerEndpoint: _gone, ...rest } = record;
      return { ...rest, state: "stopping" };
    });
    // The change message arrives asynchronously (as from another replica).
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await endpoints.resolve(id)).toBeUndefined();
    expect(await endpoints.running(id)).toBeUndefined();
    expect(await endpoints.resolve(`repl_${"2".repeat(26)}`)).toBeUndefined();
    await endpoints.close();
  });
});
