import { execFileSync, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { ReplService, ReplState } from "@devex/gen/devex/core/v1/repl_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import { afterEach, describe, expect, it } from "vitest";
import { newId } from "../src/ids.js";
import { createReplLifecycle } from "../src/repls/lifecycle.js";
import { createReconciler } from "../src/repls/reconciler.js";
import { createReplRepository, type StoredRepl } from "../src/repls/repository.js";
import { createEmbeddedStore, type StateStore } from "../src/state/index.js";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";
import { type RedisServer, type RedisServerOptions, startRedisServer } from "./support/redis-server.js";
import { FakeOrchestrator } from "./support/repls-harness.js";

/**
 * Health tells the truth about the state store: NOT_SERVING while it cannot be read or written
 * (Redis down, a full disk under the embedded journal), calls failing fast with `unavailable`
 * meanwhile, and everything back once the store is. Real redis-server, real core processes
 * (`npm run build`), a real full filesystem (a small tmpfs, which needs root).
 */

/** No standby runners and no sandbox setup: these tests start no repl. */
const coreArgs = ["--runner-standby-count", "0", "--sandbox", "none", "--repl-quota", "1000"];

const canMountTmpfs =
  process.getuid?.() === 0 &&
  spawnSync("mount", ["--version"]).status === 0 &&
  spawnSync("umount", ["--version"]).status === 0;

/** Cleanups of the running test, newest first. */
let cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  cleanups = [];
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function startCore(args: string[], dataDir: string): Promise<CoreProcess> {
  const core = await startCoreProcess([...coreArgs, ...args], dataDir);
  cleanups.push(() => core.stop());
  return core;
}

async function servingStatus(health: Client<typeof Health>): Promise<ServingStatus> {
  return (await health.check({ service: "" }, { timeoutMs: 2000 })).status;
}

/** Polls Health/Check until it answers `status`; fails after `timeoutMs`. */
async function waitForStatus(health: Client<typeof Health>, status: ServingStatus, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: ServingStatus | string = "no answer";
  for (;;) {
    last = await servingStatus(health).catch((error: unknown) => ConnectError.from(error).message);
    if (last === status) return;
    if (Date.now() > deadline) {
      throw new Error(`health did not become ${ServingStatus[status]} within ${timeoutMs} ms (last: ${String(last)})`);
    }
    await sleep(50);
  }
}

/** Runs a call; answers how it failed (or undefined) and how long it took. */
async function timed(call: () => Promise<unknown>): Promise<{ error?: ConnectError; elapsedMs: number }> {
  const startedAt = Date.now();
  try {
    await call();
    return { elapsedMs: Date.now() - startedAt };
  } catch (error) {
    return { error: ConnectError.from(error), elapsedMs: Date.now() - startedAt };
  }
}

/** Mounts a tmpfs of `sizeBytes` at `dir` (made first) and unmounts it after the test. */
async function mountTmpfs(dir: string, sizeBytes: number): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${sizeBytes},mode=0700`, "tmpfs", dir]);
  cleanups.push(async () => execFileSync("umount", ["-l", dir]));
}

/** Writes `path` until its filesystem is full (ENOSPC). */
async function fillFilesystem(path: string): Promise<void> {
  const file = await open(path, "w");
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) await file.write(chunk);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error;
  } finally {
    await file.close();
  }
}

/** A redis-server of the test's own, stopped after the core that uses it. */
async function startRedis(options?: RedisServerOptions): Promise<RedisServer> {
  const redis = await startRedisServer(options);
  cleanups.push(() => redis.stop());
  return redis;
}

describe("core on Redis", () => {
  it("answers NOT_SERVING and fails calls with unavailable at once while Redis is down, and recovers with it", async () => {
    const redis = await startRedis();
    const core = await startCore(["--state-store", "redis", "--redis-url", redis.url], await tempDir("devex-core-"));
    const repls = core.client(ReplService, await core.devApiKey());
    const health = core.client(Health);
    const kept = (await repls.createRepl({ name: "kept", templateName: "blank" })).repl?.id;
    expect(await servingStatus(health)).toBe(ServingStatus.SERVING);

    let whileDown: { error?: ConnectError; elapsedMs: number } | undefined;
    await redis.restart(async () => {
      await waitForStatus(health, ServingStatus.NOT_SERVING, 5000);
      whileDown = await timed(() => repls.listRepls({}, { timeoutMs: 15_000 }));
    });
    expect(whileDown?.error?.code, whileDown?.error?.message).toBe(Code.Unavailable);
    expect(whileDown?.error?.rawMessage).toMatch(/redis/i);
    expect(whileDown?.elapsedMs).toBeLessThan(5000);

    await waitForStatus(health, ServingStatus.SERVING, 10_000);
    const listed = await repls.listRepls({}, { timeoutMs: 5000 });
    expect(listed.repls.map((repl) => repl.id)).toEqual([kept]);
    await repls.createRepl({ name: "after", templateName: "blank" }, { timeoutMs: 5000 });
  });

  it("refuses to start on a Redis without persistence unless --allow-volatile-redis, and then warns", async () => {
    const redis = await startRedis({ persistence: false });
    const dataDir = await tempDir("devex-core-");
    const args = ["--state-store", "redis", "--redis-url", redis.url];
    const refusal = await startCoreProcess([...coreArgs, ...args], dataDir).then(
      async (core) => {
        await core.stop();
        return "started";
      },
      (error: unknown) => String(error),
    );
    expect(refusal).toMatch(/exited with 1 before listening/);
    expect(refusal).toMatch(/persistence/);
    expect(refusal).toContain("--allow-volatile-redis");

    const core = await startCore([...args, "--allow-volatile-redis"], dataDir);
    const warning = core.service.output.find((line) => line.includes("--allow-volatile-redis"));
    expect(warning).toMatch(/"level":40/);
    const repls = core.client(ReplService, await core.devApiKey());
    await repls.createRepl({ name: "volatile", templateName: "blank" });
  });

  it("starts with a warning on a Redis whose CONFIG command is disabled", async () => {
    const redis = await startRedis({ args: ["--rename-command", "CONFIG", ""] });
    const core = await startCore(["--state-store", "redis", "--redis-url", redis.url], await tempDir("devex-core-"));
    const warning = core.service.output.find((line) => line.includes("could not check"));
    expect(warning).toMatch(/"level":40/);
  });
});

describe.skipIf(!canMountTmpfs)("core on the embedded store", () => {
  it("answers NOT_SERVING and unavailable while its journal's disk is full, and recovers once there is space", async () => {
    const dataDir = await tempDir("devex-core-");
    const stateDir = join(dataDir, "state");
    await mountTmpfs(stateDir, 512 * 1024);
    let core = await startCore([], dataDir);
    let repls = core.client(ReplService, await core.devApiKey());
    const health = () => core.client(Health);
    await repls.createRepl({ name: "before", templateName: "blank" });

    const filler = join(stateDir, "filler");
    await fillFilesystem(filler);
    const created: string[] = ["before"];
    let failed: { name: string; error: ConnectError; elapsedMs: number } | undefined;
    for (let i = 0; i < 100 && !failed; i++) {
      const name = `full-${i}`;
      const { error, elapsedMs } = await timed(() => repls.createRepl({ name, templateName: "blank" }));
      if (error) failed = { name, error, elapsedMs };
      else created.push(name);
    }
    expect(failed?.error.code, failed?.error.message).toBe(Code.Unavailable);
    expect(failed?.error.rawMessage).toMatch(/no space left on device/);
    expect(failed?.elapsedMs).toBeLessThan(5000);
    await waitForStatus(health(), ServingStatus.NOT_SERVING, 5000);
    // Writes keep failing fast while the disk is full; what failed is nowhere to be seen.
    const again = await timed(() => repls.createRepl({ name: "still-full", templateName: "blank" }));
    expect(again.error?.code).toBe(Code.Unavailable);
    expect(again.elapsedMs).toBeLessThan(5000);
    const listedWhileFull = await repls.listRepls({ pageSize: 1000 });
    expect(listedWhileFull.repls.map((repl) => repl.name).sort()).toEqual([...created].sort());

    await rm(filler);
    await waitForStatus(health(), ServingStatus.SERVING, 5000);
    const after = await timed(() => repls.createRepl({ name: failed?.name ?? "after", templateName: "blank" }));
    expect(after.error).toBeUndefined();
    expect(after.elapsedMs).toBeLessThan(2000);
    created.push(failed?.name ?? "after");

    // The journal holds exactly what core answered: a restarted core lists the same repls.
    await core.stop();
    core = await startCore([], dataDir);
    repls = core.client(ReplService, await core.devApiKey());
    const listed = await repls.listRepls({ pageSize: 1000 });
    expect(listed.repls.map((repl) => repl.name).sort()).toEqual([...created].sort());
    expect(listed.repls.every((repl) => repl.state === ReplState.CREATED)).toBe(true);
  });
});

describe.skipIf(!canMountTmpfs)("the embedded store on a full disk", () => {
  it("takes back a commit its journal refused, refuses writes until there is space, then writes again", async () => {
    const dir = await tempDir("devex-state-");
    await mountTmpfs(join(dir, "state"), 256 * 1024);
    const store = await createEmbeddedStore({ dataDir: dir });
    cleanups.push(() => store.close());
    await store.commit({ puts: [{ key: "k", value: "1" }], indexAdds: [{ index: "all", member: "k" }] });

    const filler = join(dir, "state", "filler");
    await fillFilesystem(filler);
    let refused: unknown;
    for (let i = 0; i < 100 && refused === undefined; i++) {
      await store
        .commit({
          checks: [{ key: "k", version: i + 1 }],
          deletes: [`gone-${i}`],
          puts: [{ key: "k", value: "x".repeat(1000) }],
          indexRemoves: [{ index: "all", member: "k" }],
          indexAdds: [{ index: "all", member: `m${i}` }],
        })
        .catch((error: unknown) => {
          refused = error;
        });
    }
    expect(String(refused)).toMatch(/no space left on device/);
    // Memory is as the disk has it: the refused commit left no trace.
    const seen = { k: await store.get("k"), all: await store.range("all", { limit: 1000 }) };
    expect(await store.ping()).toBe(false);
    await expect(store.commit({ puts: [{ key: "other", value: "1" }] })).rejects.toThrow(/no space left on device/);
    expect(await store.get("other")).toBeUndefined();

    await rm(filler);
    expect(await store.ping()).toBe(true);
    const version = seen.k?.version ?? 0;
    expect(await store.commit({ checks: [{ key: "k", version }], puts: [{ key: "k", value: "after" }] })).toEqual({
      ok: true,
      versions: { k: version + 1 },
    });
    await store.close();

    const reopened = await createEmbeddedStore({ dataDir: dir });
    cleanups.push(() => reopened.close());
    expect(await reopened.get("k")).toEqual({ value: "after", version: version + 1 });
    expect(await reopened.range("all", { limit: 1000 })).toEqual(seen.all);
  });
});

describe("a transition whose outcome the store refused", () => {
  it("is taken over at once once the store is back, by a start and by the reconciler", async () => {
    const embedded = await createEmbeddedStore();
    let refuseWrites = false;
    const store: StateStore = {
      ...embedded,
      async commit(transaction) {
        if (refuseWrites) throw new Error("ENOSPC: no space left on device, write");
        return embedded.commit(transaction);
      },
    };
    const orchestrator = new FakeOrchestrator();
    orchestrator.readyDelayMs = 200;
    const repository = createReplRepository({ store, pollIntervalMs: 25 });
    const lifecycle = createReplLifecycle({ orchestrator, repository, startTimeoutMs: 60_000, stopGraceMs: 0 });
    const reconciler = createReconciler({ lifecycle, orchestrator, stuckAfterMs: 120_000 });
    const record = (id: string): StoredRepl => ({
      id,
      name: id.slice("repl_".length),
      ownerUserId: "usr_test",
      templateName: "blank",
      state: "created",
      failureReason: "",
      createdAtMs: Date.now(),
      updatedAtMs: Date.now(),
      idleTimeoutMs: 0,
      currentSnapshotId: "",
      labels: {},
    });

    /** Starts `id` and refuses writes while its runner boots: the start can record neither running nor failed. */
    const strand = async (id: string) => {
      await repository.create(record(id), 100);
      const start = lifecycle.start(id);
      start.catch(() => undefined);
      await sleep(50);
      refuseWrites = true;
      await expect(start).rejects.toThrow(/no space left on device/);
      refuseWrites = false;
      expect((await repository.get(id))?.record.state).toBe("starting");
    };

    const a = newId("repl");
    await strand(a);
    const { error, elapsedMs } = await timed(() =>
      Promise.race([
        lifecycle.start(a),
        sleep(10_000).then(() => {
          throw new Error("StartRepl still waits after 10 s");
        }),
      ]),
    );
    expect(error).toBeUndefined();
    expect(elapsedMs).toBeLessThan(2000);
    expect((await repository.get(a))?.record.state).toBe("running");

    const b = newId("repl");
    await strand(b);
    const report = await reconciler.runOnce();
    expect(report.stuckRetried).toEqual([b]);
    expect((await repository.get(b))?.record).toMatchObject({
      state: "failed",
      failureReason: "runner did not start: the state store failed during the start",
    });
    expect(orchestrator.runners.has(b)).toBe(false);
    expect(orchestrator.violations).toEqual([]);
    await reconciler.stop();
    await embedded.close();
  });
});
