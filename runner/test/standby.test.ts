import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { type AttachRequest, AttachRequestSchema, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { loadConfig, signRunnerToken } from "@devex/kit";
import { repoRoot } from "@devex/kit/testing";
import { type CryptoKey, exportSPKI, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Channel } from "../src/channel.js";
import { runnerSettings, standbyConfigError } from "../src/config.js";
import { parseAssignment } from "../src/standby.js";

const replId = `repl_${"s".repeat(10)}${"0123456789abcdef"}`;
const otherReplId = `repl_${"o".repeat(26)}`;
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
  const waiters: { msg: string; resolve: (record: Record<string, unknown>) => void }[] = [];
  const onLine = (line: string) => {
    output.push(line);
    if (!line.startsWith("{")) return;
    const record = JSON.parse(line) as Record<string, unknown>;
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
        waiters.push({ msg, resolve });
        void exited.then((code) => reject(new Error(`exited with ${code} before "${msg}":\n${output.join("\n")}`)));
      });
    },
  };
}

const standbyArgs = () => ["--standby", "--port", "0", `--token-public-key=${publicKeyPem}`];

function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

const tokenFor = (id: string, role: "user" | "core" = "user") =>
  signRunnerToken(privateKey, { replId: id, userId: "usr_test", role, ttlMs: 60_000 });

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
  it("warms up, then serves the repl assigned on stdin, to tokens for that repl only", async () => {
    const runner = startRunner(standbyArgs());
    await runner.record("standby");
    const workspace = join(root, "assigned", "workspace");
    const home = join(root, "assigned", "home");
    const listening = runner.record("listening");
    // Core ends stdin right after the assignment: the runner lives on.
    runner.child.stdin?.end(`${JSON.stringify({ replId, workspace, home })}\n`);
    const { port } = await listening;
    const url = `http://127.0.0.1:${port}`;

    const fs = createClient(
      FilesystemService,
      createGrpcTransport({ baseUrl: url, interceptors: [bearer(await tokenFor(replId))] }),
    );
    await fs.writeFile({ path: "hello.txt", content: new TextEncoder().encode("hi") });
    expect(await readFile(join(workspace, "hello.txt"), "utf8")).toBe("hi");

    const status = await createClient(
      RunnerService,
      createGrpcTransport({ baseUrl: url, interceptors: [bearer(await tokenFor(replId, "core"))] }),
    ).getStatus({});
    expect(status).toMatchObject({ replId, workspacePath: await realpath(workspace) });

    // The terminal's programs get the assigned home.
    const terminal = createClient(
      TerminalService,
      createGrpcTransport({ baseUrl: url, interceptors: [bearer(await tokenFor(replId))] }),
    );
    const requests = new Channel<AttachRequest>();
    requests.push(
      create(AttachRequestSchema, {
        kind: {
          case: "open",
          value: { target: { case: "create", value: { command: ["sh", "-c", 'printf "%s" "$HOME"'] } } },
        },
      }),
    );
    let output = "";
    for await (const res of terminal.attach(requests)) {
      if (res.event.case === "output") output += new TextDecoder().decode(res.event.value.data);
      if (res.event.case === "exit") break;
    }
    requests.close();
    expect(output).toBe(home);

    const other = createClient(
      FilesystemService,
      createGrpcTransport({ baseUrl: url, interceptors: [bearer(await tokenFor(otherReplId))] }),
    );
    const refused = await other.stat({ path: "." }).then(
      () => undefined,
      (error: unknown) => ConnectError.from(error),
    );
    expect(refused?.code).toBe(Code.Unauthenticated);
    expect(refused?.rawMessage).toContain("issued for another repl");

    runner.child.kill("SIGTERM");
    expect(await runner.exited).toBe(0);
  });

  it("exits 0 at once when stdin ends before an assignment, during the warm-up or after it", async () => {
    // Core going away before the runner even started reading, and while it waits.
    const early = startRunner(standbyArgs());
    early.child.stdin?.end();
    const waiting = startRunner(standbyArgs());
    await waiting.record("standby");
    const began = Date.now();
    waiting.child.stdin?.end();
    expect(await waiting.exited).toBe(0);
    expect(Date.now() - began).toBeLessThan(2_000);
    expect(await early.exited).toBe(0);
    for (const runner of [early, waiting]) expect(runner.output.join("\n")).not.toContain('"listening"');
  });

  it("exits 2 on an assignment that is not one, saying why", async () => {
    const cases = [
      ["not json", "not JSON"],
      [JSON.stringify({ replId: "repl_nope", workspace: join(root, "w") }), "replId must be a repl id"],
    ] as const;
    const runners = cases.map(([line]) => {
      const runner = startRunner(standbyArgs());
      runner.child.stdin?.end(`${line}\n`);
      return runner;
    });
    for (const [index, runner] of runners.entries()) {
      expect(await runner.exited, runner.output.join("\n")).toBe(2);
      const error = runner.output.find((line) => line.includes("invalid standby assignment")) ?? "";
      expect(error).toContain(cases[index]?.[1]);
      expect(runner.output.join("\n")).not.toContain('"listening"');
    }
  });

  it("refuses --repl-id or --workspace with --standby, and --standby without core's key", async () => {
    const conflicting = startRunner([...standbyArgs(), "--repl-id", replId]);
    expect(await conflicting.exited).toBe(2);
    expect(conflicting.output.join("\n")).toContain("--repl-id (DEVEX_REPL_ID): not with --standby");

    const check = (argv: string[], env: Record<string, string> = {}) =>
      standbyConfigError(loadConfig(runnerSettings, { argv, env }), { argv, env })?.message ?? "";
    const key = `--token-public-key=${publicKeyPem}`;
    expect(check(["--standby", key])).toBe("");
    expect(check(["--standby", key, "--workspace=/tmp/w"])).toContain("--workspace (DEVEX_RUNNER_WORKSPACE): not with");
    expect(check(["--standby", key], { DEVEX_REPL_ID: replId })).toContain("--repl-id (DEVEX_REPL_ID): not with");
    expect(check(["--standby", key, "--dev"])).toContain("--dev (DEVEX_RUNNER_DEV): not with");
    expect(check(["--standby"])).toContain(
      "--token-public-key (DEVEX_RUNNER_TOKEN_PUBLIC_KEY): required with --standby",
    );
    // Without --standby nothing changes.
    expect(check(["--workspace=/tmp/w", "--repl-id", replId])).toBe("");
  });

  it("reads an assignment with the rules of the flags it stands for", () => {
    expect(parseAssignment(JSON.stringify({ replId, workspace: "/w", home: "/h" }))).toEqual({
      replId,
      workspace: "/w",
      home: "/h",
    });
    expect(parseAssignment(JSON.stringify({ replId, workspace: "/w" }))).toEqual({ replId, workspace: "/w" });
    expect(() => parseAssignment("[]")).toThrow("not a JSON object");
    expect(() => parseAssignment(JSON.stringify({ replId }))).toThrow("workspace is missing");
    expect(() => parseAssignment(JSON.stringify({ replId, workspace: "" }))).toThrow("workspace must not be empty");
    expect(() => parseAssignment(JSON.stringify({ replId, workspace: "/w", home: "" }))).toThrow(
      "home must not be empty",
    );
    expect(() => parseAssignment(JSON.stringify({ replId, workspace: "/w", port: 1 }))).toThrow("unknown fields port");
    expect(() => parseAssignment(JSON.stringify({ replId: 7, workspace: "/w" }))).toThrow("replId must be a string");
  });
});
