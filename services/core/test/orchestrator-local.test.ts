import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { createLogger, processExists, signRunnerToken } from "@devex/kit";
import { repoRoot } from "@devex/kit/testing";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newId } from "../src/ids.js";
import { createLocalOrchestrator, type LocalOrchestratorOptions } from "../src/orchestrator/local.js";
import type { Orchestrator, RunnerInstance } from "../src/orchestrator/orchestrator.js";
import { createRunnerCaller } from "../src/orchestrator/runner-client.js";
import { loadTokenKeys, type TokenKeys } from "../src/orchestrator/token-keys.js";

const runnerEntry = join(repoRoot, "runner", "dist", "main.js");
const logger = createLogger({ service: "core", level: process.env.DEVEX_TEST_LOG_LEVEL ?? "silent" });
const orchestrators: Orchestrator[] = [];
const strays: ChildProcess[] = [];
const scratchDirs: string[] = [];
let dataDir: string;
let tokenKeys: TokenKeys;
let orchestrator: Orchestrator;

function newOrchestrator(overrides: Partial<LocalOrchestratorOptions> = {}): Orchestrator {
  const created = createLocalOrchestrator({ dataDir, runnerEntry, tokenKeys, logger, ...overrides });
  orchestrators.push(created);
  return created;
}

const spec = (replId = newId("repl")) => ({ replId, userId: "usr_test", templateName: "blank" });

async function recordOf(replId: string, dir = dataDir): Promise<{ pid: number; port: number }> {
  return JSON.parse(await readFile(join(dir, "runners", `${replId}.json`), "utf8"));
}

/** A debug logger that keeps every record, to see what the standbys say. */
function capturingLogger() {
  const records: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n")) if (line) records.push(JSON.parse(line));
      done();
    },
  });
  const readyStandbys = () => records.filter((r) => r.msg === "standby").map((r) => Number(r.standbyPid));
  return { logger: pino({ level: "debug" }, stream), records, readyStandbys };
}

async function codeOf(call: () => Promise<unknown>): Promise<{ code: Code | "ok"; message: string }> {
  try {
    await call();
    return { code: "ok", message: "" };
  } catch (error) {
    const ce = ConnectError.from(error);
    return { code: ce.code, message: ce.rawMessage };
  }
}

async function until(predicate: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A client of a runner service with a user-role token for the repl, as a browser or the SDK would have. */
async function userClient<S extends typeof FilesystemService | typeof TerminalService>(
  runner: RunnerInstance,
  service: S,
) {
  const token = await signRunnerToken(tokenKeys.privateKey, {
    replId: runner.replId,
    userId: runner.userId,
    role: "user",
    ttlMs: 60_000,
  });
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  return createClient(service, createGrpcTransport({ baseUrl: runner.endpoint, interceptors: [auth] }));
}

beforeAll(async () => {
  // CI runs `npm run build` before the tests; a fresh checkout builds here once.
  if (!existsSync(runnerEntry)) execFileSync("npm", ["run", "-s", "build"], { cwd: repoRoot, stdio: "ignore" });
  dataDir = await mkdtemp(join(tmpdir(), "devex-orchestrator-test-"));
  tokenKeys = await loadTokenKeys(dataDir);
  orchestrator = newOrchestrator();
});

afterAll(async () => {
  await Promise.all(orchestrators.map((o) => o.close({ stopRunners: true })));
  for (const child of strays) child.kill("SIGKILL");
  await Promise.all([dataDir, ...scratchDirs].map((dir) => rm(dir, { recursive: true, force: true })));
});

describe("local orchestrator", () => {
  it("starts a runner that serves the repl's workspace to a user token and its status to core", async () => {
    const { replId } = spec();
    const started = await orchestrator.start(spec(replId));
    expect(started).toMatchObject({ replId, userId: "usr_test", phase: "starting" });
    expect(started.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    const ready = await orchestrator.waitReady(replId, 15_000);
    expect(ready).toMatchObject({ replId, phase: "ready", endpoint: started.endpoint });

    const caller = createRunnerCaller(tokenKeys);
    const status = await caller.status(ready);
    expect(status).toMatchObject({ replId, attachedClients: 0, sessionCount: 0, runningProcessCount: 0 });
    expect(status.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(await caller.health(ready.endpoint)).toBe(true);
    // A runner is never believed when it serves another repl than the one asked for.
    expect((await codeOf(() => caller.status({ ...ready, replId: newId("repl") }))).code).not.toBe("ok");
    caller.close();

    const fs = await userClient(ready, FilesystemService);
    await fs.writeFile({ path: "notes/hello.txt", content: new TextEncoder().encode("hi"), createParents: true });
    const read = await fs.readFile({ path: "notes/hello.txt" });
    expect(new TextDecoder().decode(read.content)).toBe("hi");
    expect(await readFile(join(orchestrator.workspacePath(replId), "notes", "hello.txt"), "utf8")).toBe("hi");
    expect((await stat(join(dataDir, "homes", replId))).isDirectory()).toBe(true);

    const record = await recordOf(replId);
    expect(record).toMatchObject({ replId, userId: "usr_test", port: Number(new URL(ready.endpoint).port) });
    expect(processExists(record.pid)).toBe(true);
    expect(await orchestrator.get(replId)).toMatchObject({ replId, phase: "ready" });
    expect((await orchestrator.list()).map((r) => r.replId)).toContain(replId);
    await orchestrator.stop(replId, 2_000);
  });

  it("returns the same runner when asked to start it twice, even at once", async () => {
    const { replId } = spec();
    const [a, b] = await Promise.all([orchestrator.start(spec(replId)), orchestrator.start(spec(replId))]);
    expect(b.endpoint).toBe(a.endpoint);
    await orchestrator.waitReady(replId, 15_000);
    const c = await orchestrator.start(spec(replId));
    expect(c).toMatchObject({ endpoint: a.endpoint, startedAtMs: a.startedAtMs, phase: "ready" });
    await orchestrator.stop(replId, 2_000);
  });

  it("stops gracefully (sessions get SIGHUP), removes the record, and is idempotent", async () => {
    const { replId } = spec();
    await orchestrator.start(spec(replId));
    const ready = await orchestrator.waitReady(replId, 15_000);
    const { pid } = await recordOf(replId);
    const terminal = await userClient(ready, TerminalService);
    await terminal.createSession({
      spec: {
        command: [
          "bash",
          "-c",
          "trap 'echo bye > hup.txt; exit 0' HUP; echo > trapped.txt; while :; do sleep 0.05; done",
        ],
      },
    });
    // Stop only once bash has installed its trap (a loaded machine can take a while to get there).
    await until(() => existsSync(join(orchestrator.workspacePath(replId), "trapped.txt")), "the HUP trap to be set");

    const began = Date.now();
    await orchestrator.stop(replId, 5_000);
    expect(Date.now() - began).toBeLessThan(4_000);
    expect(processExists(pid)).toBe(false);
    expect(await readFile(join(orchestrator.workspacePath(replId), "hup.txt"), "utf8")).toBe("bye\n");
    expect(existsSync(join(dataDir, "runners", `${replId}.json`))).toBe(false);
    expect(await orchestrator.get(replId)).toBeUndefined();

    await orchestrator.stop(replId, 1_000);
    await orchestrator.stop(newId("repl"), 1_000);
  });

  it("reports a runner whose process died as exited, and waitReady fails with Unavailable", async () => {
    const { replId } = spec();
    await orchestrator.start(spec(replId));
    await orchestrator.waitReady(replId, 15_000);
    const { pid } = await recordOf(replId);
    process.kill(pid, "SIGKILL");
    await until(async () => (await orchestrator.get(replId))?.phase === "exited", "the runner to be seen exited");
    expect((await orchestrator.get(replId))?.detail).toContain("SIGKILL");
    const failed = await codeOf(() => orchestrator.waitReady(replId, 5_000));
    expect(failed.code).toBe(Code.Unavailable);
    expect(failed.message).toContain("SIGKILL");
    expect((await orchestrator.list()).map((r) => r.replId)).not.toContain(replId);
    await until(() => !existsSync(join(dataDir, "runners", `${replId}.json`)), "the record to be removed");

    // Starting again replaces the dead runner.
    await orchestrator.start(spec(replId));
    expect(await orchestrator.waitReady(replId, 15_000)).toMatchObject({ phase: "ready" });
    await orchestrator.stop(replId, 2_000);
    expect(await orchestrator.get(replId)).toBeUndefined();
  });

  it("fails fast with the runner's last output when it exits before listening", async () => {
    const entry = join(dataDir, "crashing-runner.mjs");
    await writeFile(entry, 'console.error("boom: no such flag"); process.exit(3);\n');
    const crashing = newOrchestrator({ runnerEntry: entry });
    const { replId } = spec();
    const failed = await codeOf(() => crashing.start(spec(replId)));
    expect(failed.code).toBe(Code.Unavailable);
    expect(failed.message).toContain("code 3");
    expect(failed.message).toContain("boom: no such flag");
    expect(await crashing.get(replId)).toMatchObject({ phase: "exited" });

    const missing = newOrchestrator({ runnerEntry: join(dataDir, "nowhere.js") });
    expect((await codeOf(() => missing.start(spec()))).code).toBe(Code.FailedPrecondition);
    expect((await codeOf(() => orchestrator.start(spec("../../etc")))).code).toBe(Code.InvalidArgument);
  });

  it("gives up waiting with DeadlineExceeded when a runner listens but never answers health checks", async () => {
    const entry = join(dataDir, "mute-runner.mjs");
    await writeFile(
      entry,
      'console.log(JSON.stringify({ level: 30, msg: "listening", port: 1 }));\nsetInterval(() => {}, 1000);\n',
    );
    const mute = newOrchestrator({ runnerEntry: entry });
    const { replId } = spec();
    await mute.start(spec(replId));
    const began = Date.now();
    expect((await codeOf(() => mute.waitReady(replId, 300))).code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - began).toBeLessThan(2_000);
    const { pid } = await recordOf(replId);
    await mute.stop(replId, 200);
    expect(processExists(pid)).toBe(false);
  });

  it("lets a restarted core adopt runners still running, and stop them", async () => {
    const first = newOrchestrator();
    const { replId } = spec();
    await first.start(spec(replId));
    const ready = await first.waitReady(replId, 15_000);
    const { pid } = await recordOf(replId);
    // Core goes away without stopping its runners (as after a crash or an upgrade).
    await first.close();
    // The runner logs this failed call to a pipe nobody reads any more: it must live on.
    const res = await fetch(`${ready.endpoint}/devex.runner.v1.FilesystemService/Stat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"path":"."}',
    });
    expect(res.status).toBe(401);

    const second = newOrchestrator();
    const listed = await second.list();
    expect(listed.find((r) => r.replId === replId)).toMatchObject({ phase: "ready", endpoint: ready.endpoint });
    expect(await second.get(replId)).toMatchObject({ phase: "ready", endpoint: ready.endpoint });
    expect(await second.waitReady(replId, 5_000)).toMatchObject({ endpoint: ready.endpoint });
    expect(await second.start(spec(replId))).toMatchObject({ endpoint: ready.endpoint });
    const fs = await userClient(ready, FilesystemService);
    expect((await fs.stat({ path: "." })).entry?.path).toBe(".");

    await second.stop(replId, 2_000);
    expect(processExists(pid)).toBe(false);
    expect(await second.get(replId)).toBeUndefined();
  });

  it("drops stale records without touching processes it cannot prove are its runners", async () => {
    const runnersDir = join(dataDir, "runners");
    await mkdir(runnersDir, { recursive: true });
    const write = (replId: string, pid: number, port: number) =>
      writeFile(
        join(runnersDir, `${replId}.json`),
        JSON.stringify({ replId, userId: "usr_test", pid, port, startedAtMs: Date.now() - 60_000 }),
      );

    const dead = spawn(process.execPath, ["-e", ""]);
    await new Promise((resolve) => dead.once("exit", resolve));
    const deadId = newId("repl");
    await write(deadId, dead.pid ?? 0, 1);

    const sleeper = spawn("sleep", ["30"]);
    strays.push(sleeper);
    const reusedId = newId("repl");
    await write(reusedId, sleeper.pid ?? 0, 1);

    // A live runner of another repl, as if its pid and port had been reused.
    const { replId: liveId } = spec();
    await orchestrator.start(spec(liveId));
    const live = await orchestrator.waitReady(liveId, 15_000);
    const liveRecord = await recordOf(liveId);
    const foreignId = newId("repl");
    await write(foreignId, liveRecord.pid, liveRecord.port);

    await writeFile(join(runnersDir, `${newId("repl")}.json`), "not json");

    const fresh = newOrchestrator();
    const listed = (await fresh.list()).map((r) => r.replId);
    expect(listed).toContain(liveId);
    expect(listed).not.toContain(deadId);
    expect(listed).not.toContain(reusedId);
    expect(listed).not.toContain(foreignId);
    for (const id of [deadId, reusedId, foreignId]) {
      expect(existsSync(join(runnersDir, `${id}.json`)), id).toBe(false);
      expect(await fresh.get(id)).toBeUndefined();
    }
    expect(processExists(sleeper.pid ?? 0)).toBe(true);
    expect(processExists(liveRecord.pid)).toBe(true);
    expect(await createRunnerCaller(tokenKeys).health(live.endpoint)).toBe(true);
    await orchestrator.stop(liveId, 2_000);
  });

  it("refuses to remove a workspace while its runner runs, and removes it after stop", async () => {
    const { replId } = spec();
    await orchestrator.start(spec(replId));
    const ready = await orchestrator.waitReady(replId, 15_000);
    const fs = await userClient(ready, FilesystemService);
    await fs.writeFile({ path: "keep.txt", content: new TextEncoder().encode("x") });
    expect((await codeOf(() => orchestrator.removeWorkspace(replId))).code).toBe(Code.FailedPrecondition);
    expect(existsSync(join(orchestrator.workspacePath(replId), "keep.txt"))).toBe(true);

    await orchestrator.stop(replId, 2_000);
    await orchestrator.removeWorkspace(replId);
    expect(existsSync(orchestrator.workspacePath(replId))).toBe(false);
    expect(existsSync(join(dataDir, "homes", replId))).toBe(false);
    await orchestrator.removeWorkspace(replId);
  });

  it("stops every runner on close({ stopRunners: true })", async () => {
    const closing = newOrchestrator();
    const ids = [newId("repl"), newId("repl")];
    await Promise.all(ids.map((replId) => closing.start(spec(replId))));
    const pids = await Promise.all(ids.map(async (replId) => (await recordOf(replId)).pid));
    await closing.close({ stopRunners: true });
    for (const pid of pids) expect(processExists(pid)).toBe(false);
    expect((await codeOf(() => closing.start(spec()))).code).toBe(Code.Unavailable);
  });
});

describe("local orchestrator with standby runners", () => {
  /** An orchestrator with its own data directory, so that its listing is its own. */
  const pooledOrchestrator = async (overrides: Partial<LocalOrchestratorOptions> = {}) => {
    const dir = await mkdtemp(join(tmpdir(), "devex-orchestrator-pool-"));
    scratchDirs.push(dir);
    const captured = capturingLogger();
    const pooled = newOrchestrator({ dataDir: dir, logger: captured.logger, standbyRunners: 1, ...overrides });
    return { ...captured, dir, pooled };
  };

  it("hands a warmed-up standby the repl, refills the pool, and stops the runner like any other", async () => {
    const { pooled, dir, readyStandbys } = await pooledOrchestrator();
    await until(() => readyStandbys().length === 1, "a standby to be ready", 20_000);
    const [standbyPid = 0] = readyStandbys();
    // A standby is no runner: nothing lists it, no record names it.
    expect(await pooled.list()).toEqual([]);
    expect(existsSync(join(dir, "runners"))).toBe(false);

    const { replId } = spec();
    const started = await pooled.start(spec(replId));
    expect(started).toMatchObject({ replId, phase: "starting" });
    expect(started.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await recordOf(replId, dir)).pid).toBe(standbyPid);
    const ready = await pooled.waitReady(replId, 15_000);
    const fs = await userClient(ready, FilesystemService);
    await fs.writeFile({ path: "from-standby.txt", content: new TextEncoder().encode("ok") });
    expect(await readFile(join(pooled.workspacePath(replId), "from-standby.txt"), "utf8")).toBe("ok");
    const caller = createRunnerCaller(tokenKeys);
    expect(await caller.status(ready)).toMatchObject({ replId });
    caller.close();

    await until(() => readyStandbys().length === 2, "the pool to be refilled", 20_000);
    expect(readyStandbys()[1]).not.toBe(standbyPid);
    expect((await pooled.list()).map((r) => r.replId)).toEqual([replId]);
    expect(await readdir(join(dir, "runners"))).toEqual([`${replId}.json`]);

    await pooled.stop(replId, 2_000);
    expect(processExists(standbyPid)).toBe(false);
    expect(await pooled.get(replId)).toBeUndefined();
    expect(await readdir(join(dir, "runners"))).toEqual([]);
  });

  it("lets a restarted core adopt a runner that was a standby, and the old standby exits on its own", async () => {
    const { pooled: first, dir, readyStandbys } = await pooledOrchestrator();
    await until(() => readyStandbys().length === 1, "a standby to be ready", 20_000);
    const { replId } = spec();
    await first.start(spec(replId));
    const ready = await first.waitReady(replId, 15_000);
    const { pid } = await recordOf(replId, dir);
    expect(pid).toBe(readyStandbys()[0]);
    await until(() => readyStandbys().length === 2, "the pool to be refilled", 20_000);
    const spare = readyStandbys()[1] ?? 0;

    // Core goes away without stopping anything, and signals nothing.
    await first.close();
    await until(() => !processExists(spare), "the spare standby to exit as its stdin ended", 5_000);
    expect(processExists(pid)).toBe(true);

    const second = newOrchestrator({ dataDir: dir });
    expect((await second.list()).map((r) => r.replId)).toEqual([replId]);
    expect(await second.waitReady(replId, 5_000)).toMatchObject({ endpoint: ready.endpoint });
    const fs = await userClient(ready, FilesystemService);
    expect((await fs.stat({ path: "." })).entry?.path).toBe(".");
    await second.stop(replId, 2_000);
    expect(processExists(pid)).toBe(false);
  });

  it("stops its standbys on close({ stopRunners: true })", async () => {
    const { pooled, readyStandbys } = await pooledOrchestrator({ standbyRunners: 2 });
    await until(() => readyStandbys().length === 2, "two standbys to be ready", 20_000);
    await pooled.close({ stopRunners: true });
    await until(() => readyStandbys().every((pid) => !processExists(pid)), "the standbys to be gone", 2_000);
  });

  it("replaces a standby that dies, backing off while they keep dying", async () => {
    const { pooled, readyStandbys, records } = await pooledOrchestrator();
    await until(() => readyStandbys().length === 1, "a standby to be ready", 20_000);
    process.kill(readyStandbys()[0] ?? 0, "SIGKILL");
    await until(() => readyStandbys().length === 2, "a replacement to be ready", 20_000);
    expect(records.find((r) => r.msg === "a standby runner exited")).toMatchObject({ retryInMs: 500 });
    await pooled.close();

    const entry = join(dataDir, "crashing-standby.mjs");
    await writeFile(entry, 'console.error("boom: no standby today"); process.exit(3);\n');
    const crashing = await pooledOrchestrator({ runnerEntry: entry });
    const deaths = () => crashing.records.filter((r) => r.msg === "a standby runner exited");
    await until(() => deaths().length === 3, "three standbys to die", 15_000);
    // Started at once, then after 0.5 s, then after 1 s more: the next one waits 2 s.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(deaths().map((r) => r.retryInMs)).toEqual([500, 1_000, 2_000]);
    expect(deaths()[0]).toMatchObject({ detail: "it exited with code 3" });
    expect(String(deaths()[0]?.lastOutput)).toContain("boom: no standby today");
  });
});
