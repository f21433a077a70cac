import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, Code, createClient } from "@connectrpc/connect";
import { ReplService, ReplState } from "@devex/gen/devex/core/v1/repl_pb.js";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { unixEndpoint } from "@devex/kit";
import { afterAll, describe, expect, it } from "vitest";
import { runnerSocketName } from "../src/orchestrator/local/runner-process.js";
import { createRunnerCaller } from "../src/orchestrator/runner-client.js";
import { loadTokenKeys } from "../src/orchestrator/token-keys.js";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";
import { type RedisServer, startRedisServer } from "./support/redis-server.js";
import { type RunnerAccess, runnerTransport } from "./support/runner-access.js";

/**
 * The fault suite: real cores (built bundles), real sandboxed runners, real Redis, killed at
 * the wrong moments. Each case is one the issue tracker reported.
 */

const cores: CoreProcess[] = [];
const dirs: string[] = [];
const redises: RedisServer[] = [];

afterAll(async () => {
  await Promise.all(cores.map((core) => core.stop("SIGKILL")));
  // Runners outlive a killed core: a last core on each data directory stops them.
  for (const dir of new Set(cores.map((core) => core.dataDir))) {
    const last = await startCoreProcess(["--runner-standby-count", "0"], dir).catch(() => undefined);
    await last?.stop();
  }
  await Promise.all(redises.map((redis) => redis.stop()));
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function dataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "devex-faults-"));
  dirs.push(dir);
  return dir;
}

async function core(args: string[], dir: string, env: Record<string, string> = {}): Promise<CoreProcess> {
  const started = await startCoreProcess(
    ["--reconcile-interval-ms", "300", "--replica-lease-ms", "3000", ...args],
    dir,
    [],
    env,
  );
  cores.push(started);
  return started;
}

/** Sandboxes of a data directory that have processes now: sandbox id → how many. */
async function liveSandboxes(dir: string): Promise<Map<string, number>> {
  const live = new Map<string, number>();
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const cgroups = await readFile(`/proc/${pid}/cgroup`, "utf8").catch(() => "");
    const sandboxId = /\/(sbx_[a-z2-7]{12})(?:\/|$)/m.exec(cgroups)?.[1];
    if (sandboxId && existsSync(join(dir, "sandboxes", sandboxId))) live.set(sandboxId, (live.get(sandboxId) ?? 0) + 1);
  }
  return live;
}

/** How many runners of a data directory accept core's token for the repl and say they serve it. */
async function runnersServing(dir: string, replId: string): Promise<number> {
  const caller = createRunnerCaller(await loadTokenKeys(dir));
  let serving = 0;
  try {
    for (const sandboxId of (await liveSandboxes(dir)).keys()) {
      const endpoint = unixEndpoint(join(dir, "sandboxes", sandboxId, "run", runnerSocketName));
      const status = await caller.status({ replId, endpoint }, AbortSignal.timeout(3_000)).catch(() => undefined);
      if (status?.replId === replId) serving++;
    }
  } finally {
    caller.close();
  }
  return serving;
}

/** The FilesystemService of a running repl's runner, through core's repl origin. */
function runnerFiles(access: RunnerAccess | undefined): Client<typeof FilesystemService> {
  return createClient(FilesystemService, runnerTransport(access));
}

/** Leftover temporary files of the data directory's records. */
async function temporaryFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const folder of ["runners", "standbys"]) {
    const names = await readdir(join(dir, folder)).catch(() => [] as string[]);
    found.push(...names.filter((name) => name.endsWith(".tmp")));
  }
  return found;
}

async function stateOf(repls: Client<typeof ReplService>, replId: string): Promise<ReplState | undefined> {
  return (await repls.getRepl({ repl: { case: "replId", value: replId } })).repl?.state;
}

async function until<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${String(value)})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("a core killed in the middle of a start", () => {
  const cases = [
    { failpoint: "start-recorded", standbys: 0 },
    { failpoint: "start-spawned", standbys: 0 },
    { failpoint: "start-ready", standbys: 0 },
    { failpoint: "start-recorded", standbys: 1 },
    { failpoint: "start-assigned", standbys: 1 },
    { failpoint: "start-ready", standbys: 1 },
  ];
  it.each(cases)(
    "at $failpoint with $standbys standby: leaves no runner after one pass of the next core, and one runner after the next start",
    async ({ failpoint, standbys }) => {
      const dir = await dataDir();
      const standbyArgs = ["--runner-standby-count", String(standbys)];
      const doomed = await core(standbyArgs, dir, { DEVEX_FAILPOINTS: failpoint });
      const key = await doomed.devApiKey();
      const { repl } = await doomed.client(ReplService, key).createRepl({ name: "crash", templateName: "blank" });
      const replId = repl?.id ?? "";
      if (standbys > 0) {
        const ready = async () => doomed.service.output.some((line) => line.includes('"msg":"standby ready"'));
        await until(ready, Boolean, "a standby ready");
      }
      await doomed
        .client(ReplService, key)
        .startRepl({ replId })
        .catch(() => {});
      const { child } = doomed.service;
      await until(async () => child.exitCode !== null || child.signalCode !== null, Boolean, "core to crash", 15_000);
      expect(child.signalCode).toBe("SIGKILL");
      expect(doomed.service.output.join("\n")).toContain(`failpoint ${failpoint}`);

      // Core's first reconcile pass runs before it says it is ready.
      const next = await core(standbyArgs, dir);
      const repls = next.client(ReplService, key);
      expect(await stateOf(repls, replId)).toBe(ReplState.FAILED);
      const left = await liveSandboxes(dir);
      expect(left.size).toBeLessThanOrEqual(standbys);
      expect(await runnersServing(dir, replId)).toBe(0);
      expect(await temporaryFiles(dir)).toEqual([]);

      expect((await repls.startRepl({ replId })).repl?.state).toBe(ReplState.RUNNING);
      expect(await runnersServing(dir, replId)).toBe(1);
      await repls.stopRepl({ replId });
      await next.stop();
    },
    90_000,
  );
});

describe("a core killed in the middle of a stop", () => {
  it.each(["stop-drained", "stop-saved"])(
    "at %s: the next core finishes the stop on its first pass, saving the work, and leaves no runner",
    async (failpoint) => {
      const dir = await dataDir();
      const args = ["--runner-standby-count", "0"];
      const doomed = await core(args, dir, { DEVEX_FAILPOINTS: failpoint });
      const key = await doomed.devApiKey();
      const repls = doomed.client(ReplService, key);
      const { repl } = await repls.createRepl({ name: "crash", templateName: "blank" });
      const replId = repl?.id ?? "";
      const started = await repls.startRepl({ replId });
      await runnerFiles(started.access).writeFile({ path: "work.txt", content: Buffer.from("unsaved work") });
      await repls.stopRepl({ replId }).catch(() => {});
      const { child } = doomed.service;
      await until(async () => child.exitCode !== null || child.signalCode !== null, Boolean, "core to crash", 15_000);
      expect(doomed.service.output.join("\n")).toContain(`failpoint ${failpoint}`);

      const next = await core(args, dir);
      const again = next.client(ReplService, key);
      expect(await stateOf(again, replId)).toBe(ReplState.STOPPED);
      expect((await liveSandboxes(dir)).size).toBe(0);
      const restarted = await again.startRepl({ replId });
      const saved = await runnerFiles(restarted.access).readFile({ path: "work.txt" });
      expect(Buffer.from(saved.content).toString()).toBe("unsaved work");
      await again.stopRepl({ replId });
      await next.stop();
    },
    90_000,
  );
});

describe("a sandbox that cannot be set up", () => {
  it("fails the start with FAILED and a reason naming the cause, leaving no process behind", async () => {
    const dir = await dataDir();
    // A sandbox root under a file: making the sandbox's folders fails with ENOTDIR.
    const broken = await core(["--runner-standby-count", "0", "--sandbox-root", "/dev/null/sandboxes"], dir);
    const repls = broken.client(ReplService, await broken.devApiKey());
    const { repl } = await repls.createRepl({ name: "no-sandbox", templateName: "blank" });
    const replId = repl?.id ?? "";
    const error = await repls.startRepl({ replId }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: Code.Unavailable });
    expect(String(error)).toContain("/dev/null/sandboxes");
    const failed = (await repls.getRepl({ repl: { case: "replId", value: replId } })).repl;
    expect(failed?.state).toBe(ReplState.FAILED);
    expect(failed?.failureReason).toContain("ENOTDIR");
    expect(await readdir(join(dir, "runners")).catch(() => [])).toEqual([]);
    expect((await liveSandboxes(dir)).size).toBe(0);
    await broken.stop();
  }, 60_000);
});

describe("core replicas on one Redis and one data directory", () => {
  let redis: RedisServer;
  let dir: string;
  let a: CoreProcess;
  let b: CoreProcess;
  let key: string;

  const redisArgs = () => ["--state-store", "redis", "--redis-url", redis.url, "--runner-standby-count", "0"];

  it("agree on runners: a stop and a start on one replica never fail the repl on the other", async () => {
    redis = await startRedisServer();
    redises.push(redis);
    dir = await dataDir();
    a = await core(redisArgs(), dir);
    b = await core(redisArgs(), dir);
    key = await a.devApiKey();
    const onA = a.client(ReplService, key);
    const onB = b.client(ReplService, key);
    const { repl } = await onA.createRepl({ name: "shared", templateName: "blank" });
    const replId = repl?.id ?? "";

    // The reported sequence: start on A, let B's reconciler see the runner, stop on A, wait, start on A.
    await onA.startRepl({ replId });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await onA.stopRepl({ replId });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await onA.startRepl({ replId })).repl?.state).toBe(ReplState.RUNNING);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await stateOf(onB, replId)).toBe(ReplState.RUNNING);
    expect(await runnersServing(dir, replId)).toBe(1);

    // Concurrent starts and stops from both replicas: whatever wins, the repl ends consistent.
    let failed = 0;
    for (let round = 0; round < 20; round++) {
      const [first, second] = round % 2 === 0 ? [onA, onB] : [onB, onA];
      await Promise.allSettled([
        first.startRepl({ replId }),
        second.stopRepl({ replId }),
        second.startRepl({ replId }),
      ]);
      const settled = await until(
        () => stateOf(onA, replId),
        (state) => state !== ReplState.STARTING && state !== ReplState.STOPPING,
        "the repl to settle",
      );
      // Two reconcile passes of each replica.
      await new Promise((resolve) => setTimeout(resolve, 700));
      const after = await stateOf(onB, replId);
      if (after === ReplState.FAILED) failed++;
      expect(after, `round ${round}`).toBe(settled);
      expect(await runnersServing(dir, replId), `round ${round}`).toBe(after === ReplState.RUNNING ? 1 : 0);
      if (after === ReplState.FAILED) await onA.startRepl({ replId });
    }
    expect(failed).toBe(0);
    await onA.stopRepl({ replId });
  }, 180_000);

  it("let a replica that leaves hand its running repls over without stopping them", async () => {
    const onA = a.client(ReplService, key);
    const { repl } = await onA.createRepl({ name: "handover", templateName: "blank" });
    const replId = repl?.id ?? "";
    expect((await onA.startRepl({ replId })).repl?.state).toBe(ReplState.RUNNING);
    expect(await a.stop()).toBe(0);
    const onB = b.client(ReplService, key);
    // B claims the repl on its next pass; the runner goes on serving it.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await stateOf(onB, replId)).toBe(ReplState.RUNNING);
    expect(await runnersServing(dir, replId)).toBe(1);
    // And B can stop it, saving first.
    expect((await onB.stopRepl({ replId })).repl?.state).toBe(ReplState.STOPPED);
    expect(await runnersServing(dir, replId)).toBe(0);
  }, 60_000);

  it("take over the repls of a replica that was killed: still running, same runner", async () => {
    a = await core(redisArgs(), dir);
    const onA = a.client(ReplService, key);
    const { repl } = await onA.createRepl({ name: "killed-owner", templateName: "blank" });
    const replId = repl?.id ?? "";
    expect((await onA.startRepl({ replId })).repl?.state).toBe(ReplState.RUNNING);
    await a.stop("SIGKILL");
    const onB = b.client(ReplService, key);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await stateOf(onB, replId)).toBe(ReplState.RUNNING);
    expect(await runnersServing(dir, replId)).toBe(1);
    expect((await onB.stopRepl({ replId })).repl?.state).toBe(ReplState.STOPPED);
  }, 60_000);

  it("refuse a replica whose data directory differs: it could not see the others' runners", async () => {
    const error = await startCoreProcess(redisArgs(), await dataDir()).catch((e: unknown) => e);
    expect(String(error)).toContain("share one --data-dir");
  }, 60_000);
});
