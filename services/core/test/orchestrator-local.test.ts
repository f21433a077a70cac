import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Writable } from "node:stream";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { createLogger, endpointConnection, endpointSessionManager, processExists, signRunnerToken } from "@devex/kit";
import { repoRoot } from "@devex/kit/testing";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newId } from "../src/ids.js";
import {
  createLocalOrchestrator,
  defaultSandboxRoot,
  type LocalOrchestratorOptions,
} from "../src/orchestrator/local/index.js";
import { createSandboxDriver } from "../src/orchestrator/local/sandbox/index.js";
import { defaultRunnerResources, type Orchestrator, type RunnerInstance } from "../src/orchestrator/orchestrator.js";
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

const spec = (replId = newId("repl")) => ({
  replId,
  userId: "usr_test",
  templateName: "blank",
  resources: defaultRunnerResources,
});

async function recordOf(replId: string, dir = dataDir): Promise<{ pid: number; sandboxId: string }> {
  return JSON.parse(await readFile(join(dir, "runners", `${replId}.json`), "utf8"));
}

/** The host pid of the runner process (`devex-runner`) in the repl's sandbox. */
async function runnerPid(replId: string, dir = dataDir): Promise<number> {
  const { sandboxId } = await recordOf(replId, dir);
  const sandbox = await createSandboxDriver({
    kind: "bwrap",
    root: join(dir, "sandboxes"),
    readOnlyPaths: [],
    logger,
  }).open(sandboxId);
  for (const pid of (await sandbox?.pids()) ?? []) {
    if ((await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "")).trim() === "devex-runner") return pid;
  }
  throw new Error(`no runner process in sandbox ${sandboxId}`);
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
  const readyStandbys = () => records.filter((r) => r.msg === "standby").map((r) => String(r.standbySandboxId));
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
async function userClient<S extends typeof FilesystemService | typeof TerminalService | typeof ProcessService>(
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
  return createClient(
    service,
    createGrpcTransport({
      baseUrl: endpointConnection(runner.endpoint).origin,
      sessionManager: endpointSessionManager(runner.endpoint),
      interceptors: [auth],
    }),
  );
}

/**
 * A folder for stand-in runner bundles: bound read-only into sandboxes like the real
 * bundle's, so it must not be the data directory, and every uid must pass through it.
 */
async function binDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "devex-orchestrator-bin-"));
  await chmod(dir, 0o755);
  scratchDirs.push(dir);
  return dir;
}

/** An unauthenticated FilesystemService.Stat over the runner's socket (Connect over HTTP/1.1): its status code. */
function unauthenticatedStat(endpoint: string): Promise<number> {
  const { socketPath } = endpointConnection(endpoint);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        path: "/devex.runner.v1.FilesystemService/Stat",
        method: "POST",
        headers: { "content-type": "application/json" },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on("error", reject);
    req.end('{"path":"."}');
  });
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
    expect(started.endpoint).toMatch(/^unix:\/.*\/run\/runner\.sock$/);
    expect(started.previewEndpoint).toMatch(/^unix:\/.*\/run\/preview\.sock$/);

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
    const record = await recordOf(replId);
    expect(record).toMatchObject({ replId, userId: "usr_test", sandboxId: expect.stringMatching(/^sbx_/) });
    expect(processExists(record.pid)).toBe(true);
    // The runner is not root on the host, and its workspace belongs to its sandbox's uid.
    const runner = await runnerPid(replId);
    const uid = Number(/^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${runner}/status`, "utf8"))?.[1]);
    expect(uid).toBeGreaterThanOrEqual(200_000);
    expect((await stat(orchestrator.workspacePath(replId))).uid).toBe(uid);
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

  it("stops without a grace period (a deletion, a forced stop) at once, reporting no runner that outlived its grace", async () => {
    const { logger: captured, records } = capturingLogger();
    const quiet = newOrchestrator({ logger: captured });
    for (const graceMs of [0, 5_000]) {
      const { replId } = spec();
      await quiet.start(spec(replId));
      await quiet.waitReady(replId, 15_000);
      const { pid } = await recordOf(replId);
      await quiet.stop(replId, graceMs);
      expect(processExists(pid), `grace ${graceMs} ms`).toBe(false);
      expect(await quiet.get(replId)).toBeUndefined();
    }
    expect(records.filter((r) => r.msg === "runner stopped")).toHaveLength(2);
    expect(records.filter((r) => String(r.msg).includes("grace period")).map((r) => r.msg)).toEqual([]);
  });

  it("reports a runner whose process died as exited, and waitReady fails with Unavailable", async () => {
    const { replId } = spec();
    await orchestrator.start(spec(replId));
    await orchestrator.waitReady(replId, 15_000);
    process.kill(await runnerPid(replId), "SIGKILL");
    await until(async () => (await orchestrator.get(replId))?.phase === "exited", "the runner to be seen exited");
    expect((await orchestrator.get(replId))?.detail).toMatch(/runner/);
    const failed = await codeOf(() => orchestrator.waitReady(replId, 5_000));
    expect(failed.code).toBe(Code.Unavailable);
    expect(failed.message).toContain(replId);
    expect((await orchestrator.list()).map((r) => r.replId)).not.toContain(replId);
    await until(() => !existsSync(join(dataDir, "runners", `${replId}.json`)), "the record to be removed");

    // Starting again replaces the dead runner.
    await orchestrator.start(spec(replId));
    expect(await orchestrator.waitReady(replId, 15_000)).toMatchObject({ phase: "ready" });
    await orchestrator.stop(replId, 2_000);
    expect(await orchestrator.get(replId)).toBeUndefined();
  });

  it("fails fast with the runner's last output when it exits before listening", async () => {
    const entry = join(await binDir(), "crashing-runner.mjs");
    await writeFile(entry, 'console.error("boom: no such flag"); process.exit(3);\n');
    const crashing = newOrchestrator({ runnerEntry: entry });
    const { replId } = spec();
    const failed = await codeOf(() => crashing.start(spec(replId)));
    expect(failed.code).toBe(Code.Unavailable);
    expect(failed.message).toContain("code 3");
    expect(failed.message).toContain("boom: no such flag");
    // Nothing is left of a failed start: no runner, no record.
    expect(await crashing.get(replId)).toBeUndefined();
    expect(existsSync(join(dataDir, "runners", `${replId}.json`))).toBe(false);

    const missing = newOrchestrator({ runnerEntry: join(dataDir, "nowhere.js") });
    expect((await codeOf(() => missing.start(spec()))).code).toBe(Code.FailedPrecondition);
    expect((await codeOf(() => orchestrator.start(spec("../../etc")))).code).toBe(Code.InvalidArgument);
  });

  it("gives up waiting with DeadlineExceeded when a runner listens but never answers health checks", async () => {
    const entry = join(await binDir(), "mute-runner.mjs");
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
    expect(await unauthenticatedStat(ready.endpoint)).toBe(401);

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
    const write = (replId: string, pid: number, sandboxId: string) =>
      writeFile(
        join(runnersDir, `${replId}.json`),
        JSON.stringify({ replId, userId: "usr_test", sandboxId, pid, startedAtMs: Date.now() - 60_000 }),
      );

    const dead = spawn(process.execPath, ["-e", ""]);
    await new Promise((resolve) => dead.once("exit", resolve));
    const deadId = newId("repl");
    await write(deadId, dead.pid ?? 0, "sbx_aaaaaaaaaaaa");

    const sleeper = spawn("sleep", ["30"]);
    strays.push(sleeper);
    const reusedId = newId("repl");
    await write(reusedId, sleeper.pid ?? 0, "sbx_bbbbbbbbbbbb");

    // The live runner of another repl, named by a record as if it were this one's.
    const { replId: liveId } = spec();
    await orchestrator.start(spec(liveId));
    const live = await orchestrator.waitReady(liveId, 15_000);
    const liveRecord = await recordOf(liveId);
    const foreignId = newId("repl");
    await write(foreignId, liveRecord.pid, liveRecord.sandboxId);

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
    expect((await readdir(runnersDir)).filter((name) => !name.includes(".workspace."))).toEqual([`${liveId}.json`]);
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
    const workspace = orchestrator.workspacePath(replId);
    expect(existsSync(join(workspace, "keep.txt"))).toBe(true);

    // A stopped repl's workspace stays (its save may have failed) until it is removed.
    await orchestrator.stop(replId, 2_000);
    expect(existsSync(join(workspace, "keep.txt"))).toBe(true);
    await orchestrator.removeWorkspace(replId);
    expect(existsSync(workspace)).toBe(false);
    expect(existsSync(orchestrator.workspacePath(replId))).toBe(false);
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

describe("local orchestrator with a data directory in a closed folder", () => {
  it("keeps sandboxes where their uids reach them, and the data directory closed", async () => {
    const closed = await mkdtemp(join(tmpdir(), "devex-closed-home-"));
    scratchDirs.push(closed);
    const dir = join(closed, "data");
    await mkdir(dir, { mode: 0o700 });
    const sandboxRoot = await defaultSandboxRoot(dir);
    expect(sandboxRoot).toMatch(/^\/var\/lib\/devex\/sandboxes\/[0-9a-f]{16}$/);
    expect(await defaultSandboxRoot(dir)).toBe(sandboxRoot);
    expect(await defaultSandboxRoot(dataDir)).toBe(join(dataDir, "sandboxes"));
    scratchDirs.push(sandboxRoot);
    const outside = newOrchestrator({ dataDir: dir, sandboxRoot });
    const { replId } = spec();
    await outside.start(spec(replId));
    const ready = await outside.waitReady(replId, 15_000);
    expect(ready.endpoint.startsWith(`unix:${sandboxRoot}/`)).toBe(true);
    const fs = await userClient(ready, FilesystemService);
    await fs.writeFile({ path: "here.txt", content: new TextEncoder().encode("ok") });
    expect(outside.workspacePath(replId).startsWith(`${sandboxRoot}/`)).toBe(true);
    // Nothing was opened to other uids in the data directory or above it.
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(closed)).mode & 0o777).toBe(0o700);
    await outside.stop(replId, 2_000);
    await outside.removeWorkspace(replId);
  });
});

describe("local orchestrator with an egress allowlist", () => {
  it("lets a repl's programs reach listed hosts through core's proxy and nothing else", async () => {
    const server = createServer((_req, res) => res.end("hello from the allowed host"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const dir = await mkdtemp(join(tmpdir(), "devex-orchestrator-egress-"));
      scratchDirs.push(dir);
      const egress = newOrchestrator({
        dataDir: dir,
        network: { mode: "allowlist", allowHosts: [`127.0.0.1:${port}`] },
      });
      const { replId } = spec();
      await egress.start(spec(replId));
      const ready = await egress.waitReady(replId, 15_000);
      const processes = await userClient(ready, ProcessService);
      // A request through the proxy the sandbox's HTTP_PROXY names (bash alone: no curl needed).
      const through = async (target: string) => {
        const script = [
          'test "$HTTP_PROXY" = http://127.0.0.1:3128 || { echo "no proxy: $HTTP_PROXY"; exit 9; }',
          "exec 3<>/dev/tcp/127.0.0.1/3128",
          `printf 'GET http://${target}/ HTTP/1.0\\r\\n\\r\\n' >&3`,
          "cat <&3",
        ].join("; ");
        const res = await processes.runProcess({ config: { argv: ["bash", "-c", script] } });
        return new TextDecoder().decode(res.stdout);
      };
      const allowed = await through(`127.0.0.1:${port}`);
      expect(allowed).toMatch(/^HTTP\/1\.[01] 200/);
      expect(allowed).toContain("hello from the allowed host");
      const refused = await through(`127.0.0.2:${port}`);
      expect(refused).toMatch(/^HTTP\/1\.[01] 403/);
      expect(refused).toContain("not on this repl's egress allowlist");
      // Without the proxy there is no way out at all.
      const direct = await processes.runProcess({
        config: { argv: ["bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/${port} && echo connected`] },
      });
      expect(new TextDecoder().decode(direct.stdout)).not.toContain("connected");
      await egress.stop(replId, 2_000);
      expect(existsSync(join(dirname(dirname(ready.endpoint.slice("unix:".length))), "run", "egress.sock"))).toBe(
        false,
      );
    } finally {
      server.close();
    }
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
    const [standbySandbox = ""] = readyStandbys();
    // A standby is no runner: nothing lists it, no record names it.
    expect(await pooled.list()).toEqual([]);
    expect(existsSync(join(dir, "runners"))).toBe(false);

    const { replId } = spec();
    const started = await pooled.start(spec(replId));
    expect(started).toMatchObject({ replId, phase: "starting" });
    expect(started.endpoint).toContain(`/${standbySandbox}/run/runner.sock`);
    const { pid: standbyPid, sandboxId } = await recordOf(replId, dir);
    expect(sandboxId).toBe(standbySandbox);
    const ready = await pooled.waitReady(replId, 15_000);
    const fs = await userClient(ready, FilesystemService);
    await fs.writeFile({ path: "from-standby.txt", content: new TextEncoder().encode("ok") });
    expect(await readFile(join(pooled.workspacePath(replId), "from-standby.txt"), "utf8")).toBe("ok");
    const caller = createRunnerCaller(tokenKeys);
    expect(await caller.status(ready)).toMatchObject({ replId });
    caller.close();

    await until(() => readyStandbys().length === 2, "the pool to be refilled", 20_000);
    expect(readyStandbys()[1]).not.toBe(standbySandbox);
    expect((await pooled.list()).map((r) => r.replId)).toEqual([replId]);
    expect((await readdir(join(dir, "runners"))).sort()).toEqual([`${replId}.json`, `${replId}.workspace.json`]);

    await pooled.stop(replId, 2_000);
    expect(processExists(standbyPid)).toBe(false);
    expect(await pooled.get(replId)).toBeUndefined();
    expect(await readdir(join(dir, "runners"))).toEqual([`${replId}.workspace.json`]);
  });

  it("lets a restarted core adopt a runner that was a standby, and removes the spare standby", async () => {
    const { pooled: first, dir, readyStandbys } = await pooledOrchestrator();
    await until(() => readyStandbys().length === 1, "a standby to be ready", 20_000);
    const { replId } = spec();
    await first.start(spec(replId));
    const ready = await first.waitReady(replId, 15_000);
    const { pid, sandboxId } = await recordOf(replId, dir);
    expect(sandboxId).toBe(readyStandbys()[0]);
    await until(() => readyStandbys().length === 2, "the pool to be refilled", 20_000);
    const spare = readyStandbys()[1] ?? "";
    const driver = createSandboxDriver({ kind: "bwrap", root: join(dir, "sandboxes"), readOnlyPaths: [], logger });
    const sparePids = (await (await driver.open(spare))?.pids()) ?? [];
    expect(sparePids.length).toBeGreaterThan(0);

    // Core goes away without stopping anything, and signals nothing: the standby lives on (no stdin ties it to core).
    await first.close();
    expect(processExists(pid)).toBe(true);

    const second = newOrchestrator({ dataDir: dir });
    expect((await second.list()).map((r) => r.replId)).toEqual([replId]);
    // The spare standby is a sandbox no record explains: the new core removes it.
    expect(await driver.open(spare)).toBeUndefined();
    await until(
      () => sparePids.every((sparePid) => !processExists(sparePid)),
      "the spare's processes to be gone",
      2_000,
    );
    expect(await second.waitReady(replId, 5_000)).toMatchObject({ endpoint: ready.endpoint });
    const fs = await userClient(ready, FilesystemService);
    expect((await fs.stat({ path: "." })).entry?.path).toBe(".");
    await second.stop(replId, 2_000);
    expect(processExists(pid)).toBe(false);
  });

  it("stops its standbys on close({ stopRunners: true })", async () => {
    const { pooled, readyStandbys, dir } = await pooledOrchestrator({ standbyRunners: 2 });
    await until(() => readyStandbys().length === 2, "two standbys to be ready", 20_000);
    const driver = createSandboxDriver({ kind: "bwrap", root: join(dir, "sandboxes"), readOnlyPaths: [], logger });
    const pids = (await Promise.all(readyStandbys().map(async (id) => (await driver.open(id))?.pids() ?? []))).flat();
    expect(pids.length).toBeGreaterThan(0);
    await pooled.close({ stopRunners: true });
    for (const id of readyStandbys()) expect(await driver.open(id)).toBeUndefined();
    // The outermost process is this test's child: gone once Node has reaped it.
    await until(() => pids.every((pid) => !processExists(pid)), "the standbys' processes to be gone", 2_000);
  });

  it("replaces a standby that dies, backing off while they keep dying", async () => {
    const { pooled, readyStandbys, records, dir } = await pooledOrchestrator();
    await until(() => readyStandbys().length === 1, "a standby to be ready", 20_000);
    const driver = createSandboxDriver({ kind: "bwrap", root: join(dir, "sandboxes"), readOnlyPaths: [], logger });
    await (await driver.open(readyStandbys()[0] ?? ""))?.kill();
    await until(() => readyStandbys().length === 2, "a replacement to be ready", 20_000);
    expect(records.find((r) => r.msg === "a standby runner exited")).toMatchObject({ retryInMs: 500 });
    await pooled.close();

    const entry = join(await binDir(), "crashing-standby.mjs");
    await writeFile(entry, 'console.error("boom: no standby today"); process.exit(3);\n');
    const crashing = await pooledOrchestrator({ runnerEntry: entry });
    const deaths = () => crashing.records.filter((r) => r.msg === "a standby runner exited");
    await until(() => deaths().length === 3, "three standbys to die", 15_000);
    // Started at once, then after 0.5 s, then after 1 s more: the next one waits 2 s.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(deaths().map((r) => r.retryInMs)).toEqual([500, 1_000, 2_000]);
    expect(String(deaths()[0]?.detail)).toContain("exited with code 3");
    expect(String(deaths()[0]?.lastOutput)).toContain("boom: no standby today");
  });
});
