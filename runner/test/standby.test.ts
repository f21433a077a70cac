import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, realpath, rm } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { type AttachRequest, AttachRequestSchema, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import { loadConfig, signRunnerToken } from "@devex/kit";
import { repoRoot } from "@devex/kit/testing";
import { type CryptoKey, exportSPKI, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Channel } from "../src/channel.js";
import { runnerSettings, standbyConfigError } from "../src/config.js";

const replId = `repl_${"s".repeat(10)}${"0123456789abcdef"}`;
const otherReplId = `repl_${"o".repeat(26)}`;
const standbyId = "sb-test-1";
let root: string;
let privateKey: CryptoKey;
let publicKeyPem: string;
const children: ChildProcess[] = [];

/** A runner process started from its source with the given flags, its stdin a pipe. */
interface RunnerProcess {
  child: ChildProcess;
  output: string[];
  /** Resolves with the first log record whose `msg` is `msg`; rejects if the process exits first. */
  record(msg: string): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

function startRunner(args: string[], env: Record<string, string> = {}): RunnerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "runner/src/main.ts"), ...args], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: root, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  children.push(child);
  const output: string[] = [];
  const seen: Record<string, unknown>[] = [];
  const waiters: { msg: string; resolve: (record: Record<string, unknown>) => void }[] = [];
  const onLine = (line: string) => {
    output.push(line);
    if (!line.startsWith("{")) return;
    const record = JSON.parse(line) as Record<string, unknown>;
    seen.push(record);
    for (const waiter of waiters.filter((w) => w.msg === record.msg)) waiter.resolve(record);
  };
  if (child.stdout) createInterface({ input: child.stdout }).on("line", onLine);
  if (child.stderr) createInterface({ input: child.stderr }).on("line", onLine);
  child.stdin?.on("error", () => {});
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    output,
    exited,
    record(msg) {
      return new Promise((resolve, reject) => {
        const earlier = seen.find((record) => record.msg === msg);
        if (earlier) resolve(earlier);
        waiters.push({ msg, resolve });
        void exited.then((code) => reject(new Error(`exited with ${code} before "${msg}":\n${output.join("\n")}`)));
      });
    },
  };
}

/** A standby's flags: its socket, workspace and home under `dir`. */
const standbyArgs = (dir: string, id = standbyId) => [
  "--standby",
  "--standby-id",
  id,
  "--socket",
  join(dir, "runner.sock"),
  "--workspace",
  join(dir, "workspace"),
  "--home",
  join(dir, "home"),
  `--token-public-key=${publicKeyPem}`,
];

function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** gRPC over h2c through a Unix socket, as core calls a runner in its sandbox. */
function grpcOverSocket(socket: string, token?: string): Transport {
  return createGrpcTransport({
    baseUrl: "http://localhost",
    nodeOptions: { createConnection: () => net.connect(socket) },
    interceptors: token ? [bearer(token)] : [],
  });
}

const tokenFor = (id: string, role: "user" | "core" = "user") =>
  signRunnerToken(privateKey, { replId: id, userId: "usr_test", role, ttlMs: 60_000 });

const failure = (call: Promise<unknown>) =>
  call.then(
    () => undefined,
    (error: unknown) => ConnectError.from(error),
  );

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "devex-standby-test-"));
  const keys = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  privateKey = keys.privateKey;
  publicKeyPem = await exportSPKI(keys.publicKey);
});

afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  await rm(root, { recursive: true, force: true });
});

describe("runner --standby", () => {
  it("warms up, serves only Assign to core's standby tokens, then serves the assigned repl on the same socket", async () => {
    const dir = await mkdtemp(join(root, "standby-"));
    const socket = join(dir, "runner.sock");
    const runner = startRunner(standbyArgs(dir));
    const listening = await runner.record("listening");
    expect(listening).toMatchObject({ socket });
    await runner.record("standby");
    // Stdin is no longer the hand-over: its end changes nothing.
    runner.child.stdin?.end();

    const health = createClient(Health, grpcOverSocket(socket));
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect((await health.check({ service: FilesystemService.typeName })).status).toBe(
      HealthCheckResponse_ServingStatus.NOT_SERVING,
    );

    // Before Assign: nothing but Assign, whatever the token.
    // One HTTP/2 connection before and after Assign: core need not reconnect.
    const fs = createClient(FilesystemService, grpcOverSocket(socket, await tokenFor(replId)));
    for (const client of [
      fs,
      createClient(FilesystemService, grpcOverSocket(socket, await tokenFor(standbyId, "core"))),
    ]) {
      expect((await failure(client.stat({ path: "." })))?.code).toBe(Code.FailedPrecondition);
    }
    const early = createClient(RunnerService, grpcOverSocket(socket, await tokenFor(replId, "core")));
    expect((await failure(early.getStatus({})))?.code).toBe(Code.FailedPrecondition);

    // Assign takes core's tokens for this standby's id, and a valid repl id.
    const assignAs = async (audience: string, role: "user" | "core" = "core") =>
      createClient(RunnerService, grpcOverSocket(socket, await tokenFor(audience, role)));
    expect((await failure((await assignAs(standbyId, "user")).assign({ replId })))?.code).toBe(Code.PermissionDenied);
    expect((await failure((await assignAs("sb-another")).assign({ replId })))?.code).toBe(Code.Unauthenticated);
    const invalid = await failure((await assignAs(standbyId)).assign({ replId: "repl_nope" }));
    expect(invalid?.code).toBe(Code.InvalidArgument);
    expect(invalid?.rawMessage).toContain("repl_id");

    const assigned = runner.record("assigned");
    expect(await (await assignAs(standbyId)).assign({ replId })).toMatchObject({ replId });
    expect(await assigned).toMatchObject({ replId, standbyId });
    expect((await health.check({ service: FilesystemService.typeName })).status).toBe(
      HealthCheckResponse_ServingStatus.SERVING,
    );

    // Again with the same repl (core repeating a call whose answer it lost): fine, with either token.
    expect(await (await assignAs(standbyId)).assign({ replId })).toMatchObject({ replId });
    expect(await (await assignAs(replId)).assign({ replId })).toMatchObject({ replId });
    const reassigned = await failure((await assignAs(standbyId)).assign({ replId: otherReplId }));
    expect(reassigned?.code).toBe(Code.FailedPrecondition);
    expect(reassigned?.rawMessage).toContain(replId);

    // Now a runner for the repl, on the same socket and connection.
    await fs.writeFile({ path: "hello.txt", content: new TextEncoder().encode("hi") });
    expect(await readFile(join(dir, "workspace", "hello.txt"), "utf8")).toBe("hi");
    const status = await (await assignAs(replId)).getStatus({});
    expect(status).toMatchObject({ replId, workspacePath: await realpath(join(dir, "workspace")) });

    // The terminal's programs get the home given up front, and the repl id.
    const terminal = createClient(TerminalService, grpcOverSocket(socket, await tokenFor(replId)));
    const requests = new Channel<AttachRequest>();
    const command = ["sh", "-c", 'printf "%s %s" "$HOME" "$DEVEX_REPL_ID"'];
    requests.push(
      create(AttachRequestSchema, {
        kind: { case: "open", value: { target: { case: "create", value: { command } } } },
      }),
    );
    let output = "";
    for await (const res of terminal.attach(requests)) {
      if (res.event.case === "output") output += new TextDecoder().decode(res.event.value.data);
      if (res.event.case === "exit") break;
    }
    requests.close();
    expect(output).toBe(`${join(dir, "home")} ${replId}`);

    // Tokens of the standby id or another repl open nothing but Assign.
    for (const token of [await tokenFor(otherReplId), await tokenFor(standbyId)]) {
      const refused = await failure(createClient(FilesystemService, grpcOverSocket(socket, token)).stat({ path: "." }));
      expect(refused?.code).toBe(Code.Unauthenticated);
      expect(refused?.rawMessage).toContain("issued for another repl");
    }

    runner.child.kill("SIGTERM");
    expect(await runner.exited).toBe(0);
  });

  it("refuses what a standby cannot be, and a standby id without --standby", async () => {
    const dir = await mkdtemp(join(root, "conflict-"));
    const conflicting = startRunner([...standbyArgs(dir), "--repl-id", replId]);
    expect(await conflicting.exited).toBe(2);
    expect(conflicting.output.join("\n")).toContain("--repl-id (DEVEX_REPL_ID): not with --standby");

    const check = (argv: string[], env: Record<string, string> = {}) =>
      standbyConfigError(loadConfig(runnerSettings, { argv, env }))?.message ?? "";
    const full = standbyArgs(dir);
    expect(check(full)).toBe("");
    expect(check(full, { DEVEX_REPL_ID: replId })).toContain("--repl-id (DEVEX_REPL_ID): not with");
    expect(check([...full, "--dev"])).toContain("--dev (DEVEX_RUNNER_DEV): not with");
    const without = (flag: string) => full.filter((arg, i) => !arg.startsWith(flag) && full[i - 1] !== flag);
    expect(check(without("--token-public-key"))).toContain(
      "--token-public-key (DEVEX_RUNNER_TOKEN_PUBLIC_KEY): required with --standby",
    );
    expect(check(without("--standby-id"))).toContain("--standby-id (DEVEX_RUNNER_STANDBY_ID): required with --standby");
    expect(check(without("--socket"))).toContain("--socket (DEVEX_RUNNER_SOCKET): required with --standby");
    expect(check(["--standby-id", standbyId])).toContain("--standby-id (DEVEX_RUNNER_STANDBY_ID): only with --standby");
    expect(() => loadConfig(runnerSettings, { argv: ["--standby-id", "no spaces"], env: {} })).toThrow(/standby-id/);
    // Without --standby nothing changes.
    expect(check(["--workspace=/tmp/w", "--repl-id", replId])).toBe("");
  });
});

describe("runner --socket", () => {
  it("serves gRPC on h2c and Connect on HTTP/1.1 on its socket, as devex-runner, and refuses Assign", async () => {
    const dir = await mkdtemp(join(root, "socket-"));
    const socket = join(dir, "runner.sock");
    const runner = startRunner([
      "--socket",
      socket,
      "--workspace",
      join(dir, "workspace"),
      "--repl-id",
      replId,
      `--token-public-key=${publicKeyPem}`,
    ]);
    expect(await runner.record("listening")).toMatchObject({ socket });
    // `pkill node` in the repl does not match the runner.
    expect((await readFile(`/proc/${runner.child.pid}/comm`, "utf8")).trim()).toBe("devex-runner");

    const health = createClient(Health, grpcOverSocket(socket));
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const token = await tokenFor(replId);
    await createClient(FilesystemService, grpcOverSocket(socket, token)).writeFile({
      path: "a.txt",
      content: new TextEncoder().encode("over gRPC"),
    });
    const connect = createConnectTransport({
      baseUrl: "http://localhost",
      httpVersion: "1.1",
      nodeOptions: { socketPath: socket },
      interceptors: [bearer(token)],
    });
    const read = await createClient(FilesystemService, connect).readFile({ path: "a.txt" });
    expect(new TextDecoder().decode(read.content)).toBe("over gRPC");

    const core = createClient(RunnerService, grpcOverSocket(socket, await tokenFor(replId, "core")));
    const refused = await failure(core.assign({ replId }));
    expect(refused?.code).toBe(Code.FailedPrecondition);
    expect(refused?.rawMessage).toContain("not a standby");

    runner.child.kill("SIGTERM");
    expect(await runner.exited).toBe(0);
  });
});
