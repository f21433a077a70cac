import { mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import {
  OutputTruncation,
  ProcessConfigSchema,
  type ProcessExited,
  type ProcessInfo,
  ProcessSelectorSchema,
  ProcessService,
  ProcessState,
  ProcessStream,
} from "@devex/gen/devex/runner/v1/process_pb.js";
import { RunnerService, RunnerState, Signal } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { createLogger } from "@devex/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { workspaceEnvironment } from "../src/environment.js";
import { OutputBuffer } from "../src/process/output-buffer.js";
import { OutputCapture } from "../src/process/output-capture.js";
import { ProcessManager } from "../src/process/process-manager.js";
import { startTestRunner, type TestRunner } from "./harness.js";

/** The retained output per stream of the shared test runner. */
const capBytes = 64 * 1024;
let t: TestRunner;
let client: Client<typeof ProcessService>;

beforeAll(async () => {
  t = await startTestRunner(["--process-output-cap-bytes", String(capBytes), "--keepalive-ms", "300"]);
  client = await t.client(ProcessService);
});
afterAll(async () => {
  await t.close();
});

type AnyEvent = { case: string | undefined; value?: unknown };

/** Reads a StartProcess or ConnectProcess stream and keeps what it saw. */
class Follower {
  readonly events: AnyEvent[] = [];
  stdout = "";
  stderr = "";
  exited: ProcessExited | undefined;
  private readonly abort = new AbortController();
  private readonly iterator: AsyncIterator<{ event: AnyEvent }>;

  constructor(call: (signal: AbortSignal) => AsyncIterable<{ event: AnyEvent }>) {
    this.iterator = call(this.abort.signal)[Symbol.asyncIterator]();
  }

  /** The values of every event of one kind, in order. */
  of<T>(kind: string): T[] {
    return this.events.filter((e) => e.case === kind).map((e) => e.value as T);
  }

  /** Reads the next event; false at the end of the stream. */
  async next(): Promise<boolean> {
    const result = await this.iterator.next();
    if (result.done) return false;
    const { event } = result.value;
    this.events.push(event);
    if (event.case === "stdout") this.stdout += text((event.value as { data: Uint8Array }).data);
    if (event.case === "stderr") this.stderr += text((event.value as { data: Uint8Array }).data);
    if (event.case === "exited") this.exited = event.value as ProcessExited;
    return true;
  }

  /** Reads until `done` holds; fails if the stream ends first. */
  async until(done: (f: Follower) => boolean, what: string): Promise<void> {
    while (!done(this)) {
      if (!(await this.next())) throw new Error(`the stream ended before ${what}`);
    }
  }

  /** Reads to the end of the stream. */
  async toEnd(): Promise<this> {
    while (await this.next());
    return this;
  }

  /** Cancels the call, as a client that goes away does. */
  cancel(): void {
    this.abort.abort();
  }
}

type StartRequest = Parameters<Client<typeof ProcessService>["startProcess"]>[0];

function start(request: StartRequest, c = client): Follower {
  return new Follower((signal) => c.startProcess(request, { signal }));
}

function connect(request: Parameters<Client<typeof ProcessService>["connectProcess"]>[0]): Follower {
  return new Follower((signal) => client.connectProcess(request, { signal }));
}

/** Starts a process, waits for its `started` event and returns its info; the stream stays open. */
async function started(f: Follower): Promise<ProcessInfo> {
  await f.until((x) => x.of("started").length > 0, "started");
  const info = f.of<{ process: ProcessInfo }>("started")[0]?.process;
  if (!info) throw new Error("no process in started");
  return info;
}

function text(data: Uint8Array): string {
  return Buffer.from(data).toString("utf8");
}

async function failure(call: Promise<unknown> | Follower): Promise<ConnectError> {
  try {
    if (call instanceof Follower) await call.toEnd();
    else await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

async function poll<T>(read: () => Promise<T> | T, ok: (value: T) => boolean, what: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function get(selector: { pid: number } | { tag: string }): Promise<ProcessInfo> {
  const res = await client.getProcess({ process: "pid" in selector ? byPid(selector.pid) : byTag(selector.tag) });
  if (!res.process) throw new Error("no process in response");
  return res.process;
}

function byPid(pid: number) {
  return { selector: { case: "pid" as const, value: pid } };
}

function byTag(tag: string) {
  return { selector: { case: "tag" as const, value: tag } };
}

async function waitExited(selector: { pid: number } | { tag: string }): Promise<ProcessInfo> {
  return poll(
    () => get(selector),
    (p) => p.state === ProcessState.EXITED,
    `${JSON.stringify(selector)} to exit`,
  );
}

/** The state letter of a pid in /proc (R, S, T, Z...); throws if there is no such process. */
async function procState(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  return stat.charAt(stat.lastIndexOf(")") + 2);
}

/** Whether a pid is a live process. A zombie counts as dead: it only waits to be reaped. */
async function alive(pid: number): Promise<boolean> {
  return (await procState(pid).catch(() => "Z")) !== "Z";
}

describe("StartProcess", () => {
  it("runs argv directly, streaming started, stdout and the exit code", async () => {
    const f = await start({ config: { argv: ["printf", "%s|%s", "a b", "c"] } }).toEnd();
    const info = f.of<{ process: ProcessInfo }>("started")[0]?.process;
    expect(f.events[0]?.case).toBe("started");
    expect(info?.argv).toEqual(["printf", "%s|%s", "a b", "c"]);
    expect(info?.shell).toBe("");
    expect(info?.state).toBe(ProcessState.RUNNING);
    expect(info?.pid).toBeGreaterThan(0);
    expect(info?.cwd).toBe(".");
    expect(f.stdout).toBe("a b|c");
    expect(f.exited?.status?.exitCode).toBe(0);
    expect(f.exited?.status?.signal).toBe("");
    expect(f.exited?.stdoutTotalBytes).toBe(5n);
    expect(f.events.at(-1)?.case).toBe("exited");
  });

  it("runs a shell string with bash -lc, with separate stdout and stderr (also over Connect on HTTP/1.1)", async () => {
    const h1 = await t.client(ProcessService, { protocol: "connect-h1" });
    const shell = "echo $((1 + 2)); echo oops >&2; exit 4";
    const f = await start({ config: { shell } }, h1).toEnd();
    const info = f.of<{ process: ProcessInfo }>("started")[0]?.process;
    expect(info?.argv).toEqual(["bash", "-lc", shell]);
    expect(info?.shell).toBe(shell);
    expect(f.stdout).toBe("3\n");
    expect(f.stderr).toBe("oops\n");
    expect(f.exited?.status?.exitCode).toBe(4);
    expect(f.exited?.timedOut).toBe(false);
  });

  it("merges the request's env over the base environment, without the runner's own variables", async () => {
    process.env.DEVEX_RUNNER_TEST_SECRET = "must-not-leak";
    try {
      const shell = 'printf "%s|" "$GREETING" "$LANG" "$HOME"; printenv DEVEX_RUNNER_TEST_SECRET || printf unset';
      const f = await start({ config: { shell, env: { GREETING: "hello", LANG: "C" } } }).toEnd();
      const [greeting, lang, home, secret] = f.stdout.split("|");
      expect(greeting).toBe("hello");
      expect(secret).toBe("unset");
      expect(lang).toBe("C");
      expect(home).not.toBe("");
      // Looked up in the base PATH.
      const g = await start({ config: { argv: ["printenv", "GREETING"], env: { GREETING: "hi" } } }).toEnd();
      expect(g.stdout).toBe("hi\n");
    } finally {
      delete process.env.DEVEX_RUNNER_TEST_SECRET;
    }
  });

  it("runs in a working directory inside the workspace, relative or absolute", async () => {
    await mkdir(join(t.workspace, "sub", "dir"), { recursive: true });
    const relative = await start({ config: { argv: ["pwd"], cwd: "sub/dir" } }).toEnd();
    expect(relative.stdout).toBe(`${join(t.workspace, "sub", "dir")}\n`);
    expect(relative.of<{ process: ProcessInfo }>("started")[0]?.process.cwd).toBe("sub/dir");
    const absolute = await start({ config: { argv: ["pwd"], cwd: join(t.workspace, "sub") } }).toEnd();
    expect(absolute.stdout).toBe(`${join(t.workspace, "sub")}\n`);
    expect(absolute.of<{ process: ProcessInfo }>("started")[0]?.process.cwd).toBe("sub");
  });

  it("refuses working directories outside the workspace, missing ones and files, creating no process", async () => {
    const outside = join(tmpdir(), `devex-outside-${Date.now()}`);
    await mkdir(outside, { recursive: true });
    await symlink(outside, join(t.workspace, "out"));
    await writeFile(join(t.workspace, "afile"), "x");
    const before = (await client.listProcesses({ pageSize: 1000 })).processes.length;
    const cases: [string, Code][] = [
      ["..", Code.PermissionDenied],
      ["../..", Code.PermissionDenied],
      ["/etc", Code.PermissionDenied],
      ["sub/../../", Code.PermissionDenied],
      ["out", Code.PermissionDenied],
      ["out/missing", Code.PermissionDenied],
      ["missing", Code.NotFound],
      ["afile", Code.FailedPrecondition],
    ];
    for (const [cwd, code] of cases) {
      const error = await failure(start({ config: { argv: ["true"], cwd } }));
      expect(error.code, cwd).toBe(code);
      expect(error.message, cwd).toContain("cwd");
      expect((await failure(client.runProcess({ config: { argv: ["true"], cwd } }))).code, cwd).toBe(code);
    }
    expect((await client.listProcesses({ pageSize: 1000 })).processes.length).toBe(before);
  });

  it("fails with NOT_FOUND for a missing executable and FAILED_PRECONDITION for one that cannot run", async () => {
    const missing = await failure(start({ config: { argv: ["devex-no-such-program"] } }));
    expect(missing.code).toBe(Code.NotFound);
    expect(missing.message).toContain("devex-no-such-program");
    await writeFile(join(t.workspace, "not-executable.sh"), "echo hi\n", { mode: 0o644 });
    const denied = await failure(start({ config: { argv: ["./not-executable.sh"] } }));
    expect(denied.code).toBe(Code.FailedPrecondition);
  });

  it("keeps tags unique among running processes and reusable after exit", async () => {
    const first = start({ config: { argv: ["sleep", "1000"], tag: "dev-server" } });
    const firstInfo = await started(first);
    first.cancel();
    expect((await failure(start({ config: { argv: ["true"], tag: "dev-server" } }))).code).toBe(Code.AlreadyExists);
    expect((await failure(client.runProcess({ config: { argv: ["true"], tag: "dev-server" } }))).code).toBe(
      Code.AlreadyExists,
    );
    expect((await get({ tag: "dev-server" })).pid).toBe(firstInfo.pid);
    await client.signalProcess({ process: byTag("dev-server"), signal: Signal.KILL });
    await waitExited({ pid: firstInfo.pid });
    // The exited one still answers by tag until a new one takes the tag.
    expect((await get({ tag: "dev-server" })).pid).toBe(firstInfo.pid);
    const second = start({ config: { argv: ["sleep", "1000"], tag: "dev-server" } });
    const secondInfo = await started(second);
    second.cancel();
    expect(secondInfo.pid).not.toBe(firstInfo.pid);
    const selected = await get({ tag: "dev-server" });
    expect(selected.pid).toBe(secondInfo.pid);
    expect(selected.state).toBe(ProcessState.RUNNING);
    expect((await get({ pid: firstInfo.pid })).state).toBe(ProcessState.EXITED);
    await client.signalProcess({ process: byPid(secondInfo.pid), signal: Signal.KILL });
    await waitExited({ pid: secondInfo.pid });
  });
});

describe("stdin", () => {
  it("takes input in order and reads end-of-file after CloseProcessStdin", async () => {
    const f = start({ config: { argv: ["cat"] }, stdinEnabled: true });
    const info = await started(f);
    expect(info.stdinOpen).toBe(true);
    await client.sendProcessInput({ process: byPid(info.pid), data: Buffer.from("hello\n") });
    await f.until((x) => x.stdout === "hello\n", "the echo of hello");
    await client.sendProcessInput({ process: byPid(info.pid), data: new Uint8Array() });
    await client.sendProcessInput({ process: byPid(info.pid), data: Buffer.from("wor") });
    await client.sendProcessInput({ process: byPid(info.pid), data: Buffer.from("ld") });
    await client.closeProcessStdin({ process: byPid(info.pid) });
    // Closing twice is fine.
    await client.closeProcessStdin({ process: byPid(info.pid) });
    await f.toEnd();
    expect(f.stdout).toBe("hello\nworld");
    expect(f.exited?.status?.exitCode).toBe(0);
    const after = await get({ pid: info.pid });
    expect(after.stdinOpen).toBe(false);
    const late = await failure(client.sendProcessInput({ process: byPid(info.pid), data: Buffer.from("x") }));
    expect(late.code).toBe(Code.FailedPrecondition);
  });

  it("refuses input to a process started without stdin, which reads /dev/null", async () => {
    const eof = await start({ config: { argv: ["cat"] } }).toEnd();
    expect(eof.stdout).toBe("");
    expect(eof.exited?.status?.exitCode).toBe(0);
    const f = start({ config: { argv: ["sleep", "1000"] } });
    const info = await started(f);
    expect(info.stdinOpen).toBe(false);
    const send = await failure(client.sendProcessInput({ process: byPid(info.pid), data: Buffer.from("x") }));
    expect(send.code).toBe(Code.FailedPrecondition);
    expect(send.message).toContain("without stdin");
    const close = await failure(client.closeProcessStdin({ process: byPid(info.pid) }));
    expect(close.code).toBe(Code.FailedPrecondition);
    await client.signalProcess({ process: byPid(info.pid), signal: Signal.KILL });
    await f.toEnd();
    expect(f.exited?.status?.signal).toBe("SIGKILL");
  });
});

describe("SignalProcess", () => {
  it("delivers every signal kind, to the process or its group", async () => {
    const trapped = {
      TERM: Signal.TERM,
      INT: Signal.INT,
      HUP: Signal.HUP,
      USR1: Signal.USR1,
      USR2: Signal.USR2,
      QUIT: Signal.QUIT,
      WINCH: Signal.WINCH,
    };
    const names = Object.keys(trapped).join(" ");
    const shell = `for s in ${names}; do trap "echo got $s" $s; done; echo ready; while :; do sleep 0.1; done`;
    const f = start({ config: { shell } });
    const info = await started(f);
    await f.until((x) => x.stdout.includes("ready\n"), "ready");
    let processGroup = false;
    for (const [name, signal] of Object.entries(trapped)) {
      processGroup = !processGroup;
      const res = await client.signalProcess({ process: byPid(info.pid), signal, processGroup });
      expect(res.process?.state).toBe(ProcessState.RUNNING);
      await f.until((x) => x.stdout.includes(`got ${name}\n`), `the trap of ${name}`);
    }
    await client.signalProcess({ process: byPid(info.pid), signal: Signal.STOP });
    await poll(
      () => procState(info.pid),
      (s) => s === "T",
      "the process to stop",
    );
    expect((await get({ pid: info.pid })).state).toBe(ProcessState.RUNNING);
    await client.signalProcess({ process: byPid(info.pid), signal: Signal.CONT });
    await poll(
      () => procState(info.pid),
      (s) => s !== "T",
      "the process to continue",
    );
    await client.signalProcess({ process: byPid(info.pid), signal: Signal.KILL, processGroup: true });
    await f.toEnd();
    expect(f.exited?.status?.signal).toBe("SIGKILL");
    expect(f.exited?.status?.exitCode).toBeUndefined();
    const late = await failure(client.signalProcess({ process: byPid(info.pid), signal: Signal.TERM }));
    expect(late.code).toBe(Code.FailedPrecondition);
  });

  it("reports the signal that ended a process without a trap", async () => {
    const f = start({ config: { argv: ["sleep", "1000"] } });
    const info = await started(f);
    await client.signalProcess({ process: byPid(info.pid), signal: Signal.TERM });
    await f.toEnd();
    expect(f.exited?.status?.signal).toBe("SIGTERM");
    expect(f.exited?.timedOut).toBe(false);
  });
});

describe("timeouts", () => {
  it("kills the whole process group when the timeout passes, after the client has gone", async () => {
    const f = start({ config: { shell: "sleep 1000 & echo $!; wait", tag: "deadline", timeoutMs: 4_000 } });
    const info = await started(f);
    expect(info.timeoutMs).toBe(4_000);
    await f.until((x) => x.stdout.endsWith("\n"), "the background pid");
    const child = Number(f.stdout.trim());
    expect(await alive(child)).toBe(true);
    f.cancel();
    const exited = await waitExited({ tag: "deadline" });
    expect(exited.timedOut).toBe(true);
    expect(exited.exit?.signal).toBe("SIGKILL");
    await poll(
      async () => (await alive(info.pid)) || (await alive(child)),
      (any) => !any,
      "the shell and its background child to be gone",
    );
  });

  it("tells a connected client that the timeout killed the process", async () => {
    const f = await start({ config: { argv: ["sleep", "1000"], timeoutMs: 300 } }).toEnd();
    expect(f.exited?.timedOut).toBe(true);
    expect(f.exited?.status?.signal).toBe("SIGKILL");
  });
});

describe("lifetime and reattach", () => {
  it("outlives a cancelled StartProcess; ConnectProcess by tag replays its output, then follows it to the exit", async () => {
    const shell = "echo ready; read line; echo got:$line; exit 3";
    const f = start({ config: { shell, tag: "survivor" }, stdinEnabled: true });
    const info = await started(f);
    await f.until((x) => x.stdout === "ready\n", "ready");
    expect((await get({ tag: "survivor" })).attachedClients).toBe(1);
    f.cancel();
    const detached = await poll(
      () => get({ tag: "survivor" }),
      (p) => p.attachedClients === 0,
      "the cancelled stream to detach",
    );
    expect(detached.state).toBe(ProcessState.RUNNING);
    const c = connect({ process: byTag("survivor") });
    await c.until((x) => x.stdout === "ready\n", "the replay");
    const connected = c.of<{ process: ProcessInfo; stdoutOffset: bigint; stdoutTruncated: boolean }>("connected")[0];
    expect(c.events[0]?.case).toBe("connected");
    expect(connected?.process.pid).toBe(info.pid);
    expect(connected?.stdoutOffset).toBe(0n);
    expect(connected?.stdoutTruncated).toBe(false);
    await client.sendProcessInput({ process: byTag("survivor"), data: Buffer.from("x\n") });
    await c.toEnd();
    expect(c.stdout).toBe("ready\ngot:x\n");
    expect(c.exited?.status?.exitCode).toBe(3);
  });

  it("reattaches by pid from offsets, to a process that has exited", async () => {
    const f = await start({ config: { shell: "printf abcdef; printf XYZ >&2" } }).toEnd();
    const pid = f.of<{ process: ProcessInfo }>("started")[0]?.process.pid ?? 0;
    const c = await connect({ process: byPid(pid), stdoutOffset: 2n }).toEnd();
    const connected = c.of<{ process: ProcessInfo; stdoutOffset: bigint; stderrOffset: bigint }>("connected")[0];
    expect(connected?.process.state).toBe(ProcessState.EXITED);
    expect(connected?.stdoutOffset).toBe(2n);
    expect(connected?.stderrOffset).toBe(0n);
    expect(c.stdout).toBe("cdef");
    expect(c.stderr).toBe("XYZ");
    expect(c.of<{ offset: bigint }>("stdout")[0]?.offset).toBe(2n);
    expect(c.exited?.status?.exitCode).toBe(0);
    expect(c.events.at(-1)?.case).toBe("exited");
    const beyond = await failure(connect({ process: byPid(pid), stdoutOffset: 7n }));
    expect(beyond.code).toBe(Code.OutOfRange);
  });

  it("sends keepalives on a silent stream", async () => {
    const f = start({ config: { argv: ["sleep", "1000"] } });
    const info = await started(f);
    const c = connect({ process: byPid(info.pid) });
    await c.until((x) => x.of("keepalive").length > 0, "a keepalive");
    await client.signalProcess({ process: byPid(info.pid), signal: Signal.KILL });
    await Promise.all([c.toEnd(), f.toEnd()]);
    expect(c.exited?.status?.signal).toBe("SIGKILL");
  });
});

describe("output cap", () => {
  it("bounds what a chatty process keeps, and tells a slow client what it missed", async () => {
    const total = 50_000_000;
    // Its own connection, so that not reading it stalls only this stream.
    const slowClient = await t.client(ProcessService);
    const slow = start({ config: { shell: `yes | head -c ${total}`, tag: "chatty" } }, slowClient);
    const info = await started(slow);
    const exited = await waitExited({ pid: info.pid });
    expect(exited.stdoutTotalBytes).toBe(BigInt(total));
    expect(exited.stdoutRetainedOffset).toBe(BigInt(total - capBytes));
    // The slow client now reads everything that was queued for it.
    await slow.toEnd();
    let cursor = 0;
    let received = 0;
    for (const event of slow.events) {
      if (event.case === "lagged") {
        const lag = event.value as { stream: ProcessStream; fromOffset: bigint; toOffset: bigint };
        expect(lag.stream).toBe(ProcessStream.STDOUT);
        expect(Number(lag.fromOffset)).toBe(cursor);
        expect(lag.toOffset).toBeGreaterThan(lag.fromOffset);
        cursor = Number(lag.toOffset);
      }
      if (event.case === "stdout") {
        const out = event.value as { data: Uint8Array; offset: bigint };
        expect(Number(out.offset)).toBe(cursor);
        // "y\n" repeated: the byte at an even offset is "y", so the bytes sit at the right offsets.
        expect(out.data[0]).toBe(cursor % 2 === 0 ? 0x79 : 0x0a);
        cursor += out.data.length;
        received += out.data.length;
      }
    }
    expect(cursor).toBe(total);
    expect(slow.of("lagged").length).toBeGreaterThan(0);
    expect(received).toBeLessThan(total);
    expect(slow.exited?.stdoutTruncated).toBe(true);
    expect(slow.exited?.stdoutTotalBytes).toBe(BigInt(total));

    const c = await connect({ process: byTag("chatty") }).toEnd();
    const connected = c.of<{ stdoutOffset: bigint; stdoutTruncated: boolean }>("connected")[0];
    expect(connected?.stdoutTruncated).toBe(true);
    expect(connected?.stdoutOffset).toBe(BigInt(total - capBytes));
    expect(c.stdout.length).toBe(capBytes);
    expect(c.of<{ offset: bigint }>("stdout")[0]?.offset).toBe(BigInt(total - capBytes));
    expect(c.of("lagged")).toEqual([]);
  });

  it("keeps at most retained_output_bytes when a start asks for less than the runner's cap", async () => {
    const f = await start({ config: { shell: "head -c 10000 /dev/zero" }, retainedOutputBytes: 4096n }).toEnd();
    const pid = f.of<{ process: ProcessInfo }>("started")[0]?.process.pid ?? 0;
    const info = await get({ pid });
    expect(info.stdoutTotalBytes).toBe(10_000n);
    expect(info.stdoutRetainedOffset).toBe(BigInt(10_000 - 4096));
  });
});

describe("RunProcess", () => {
  it("returns output, exit code and timing in one response", async () => {
    const res = await client.runProcess({ config: { shell: "echo out; echo err >&2; exit 3" } });
    expect(text(res.stdout)).toBe("out\n");
    expect(text(res.stderr)).toBe("err\n");
    expect(res.status?.exitCode).toBe(3);
    expect(res.timedOut).toBe(false);
    expect(res.stdoutTruncated).toBe(false);
    expect(res.stdoutTotalBytes).toBe(4n);
    expect(res.pid).toBeGreaterThan(0);
    expect(res.startedAt).toBeDefined();
    expect(res.endedAt).toBeDefined();
    expect((await get({ pid: res.pid })).state).toBe(ProcessState.EXITED);
  });

  it("writes stdin and closes it", async () => {
    expect(text((await client.runProcess({ config: { argv: ["cat"] }, stdin: Buffer.from("abc") })).stdout)).toBe(
      "abc",
    );
    const empty = await client.runProcess({ config: { argv: ["cat"] } });
    expect(text(empty.stdout)).toBe("");
    expect(empty.status?.exitCode).toBe(0);
  });

  it("keeps the head or the tail of output beyond its limit and says so", async () => {
    const head = await client.runProcess({
      config: { shell: "head -c 100000 /dev/zero | tr '\\0' a; printf end" },
      outputLimitBytes: 1000n,
    });
    expect(text(head.stdout)).toBe("a".repeat(1000));
    expect(head.stdoutTruncated).toBe(true);
    expect(head.stdoutTotalBytes).toBe(100_003n);
    expect(head.stderrTruncated).toBe(false);
    const tail = await client.runProcess({
      config: { argv: ["seq", "1", "20000"] },
      outputLimitBytes: 100n,
      outputTruncation: OutputTruncation.TAIL,
    });
    const expected = Array.from({ length: 20_000 }, (_, i) => `${i + 1}\n`).join("");
    expect(text(tail.stdout)).toBe(expected.slice(-100));
    expect(tail.stdoutTruncated).toBe(true);
    expect(tail.stdoutTotalBytes).toBe(BigInt(expected.length));
  });

  it("kills the process at its timeout and returns the output so far", async () => {
    // Generous, so that "partial" is out even on a loaded machine.
    const res = await client.runProcess({
      config: { argv: ["bash", "-c", "echo partial; sleep 1000"], timeoutMs: 3_000 },
    });
    expect(res.timedOut).toBe(true);
    expect(res.status?.signal).toBe("SIGKILL");
    expect(text(res.stdout)).toBe("partial\n");
  });

  it("kills the process group when the call is cancelled, and is visible while it runs", async () => {
    const abort = new AbortController();
    const call = client.runProcess(
      { config: { shell: "sleep 1000 & echo $! > run-cancel.pid; wait", tag: "run-cancel" } },
      { signal: abort.signal },
    );
    const running = await poll(
      () => get({ tag: "run-cancel" }).catch(() => undefined),
      (p) => p?.state === ProcessState.RUNNING,
      "the process to be listed",
    );
    const child = Number(
      await poll(
        () => readFile(join(t.workspace, "run-cancel.pid"), "utf8").catch(() => ""),
        (s) => s.endsWith("\n"),
        "the background pid",
      ),
    );
    abort.abort();
    expect((await failure(call)).code).toBe(Code.Canceled);
    const exited = await waitExited({ tag: "run-cancel" });
    expect(exited.pid).toBe(running?.pid);
    expect(exited.exit?.signal).toBe("SIGKILL");
    await poll(
      () => alive(child),
      (a) => !a,
      "the background child to be gone",
    );
  });

  it("kills the process when the call's deadline passes", async () => {
    const error = await failure(
      client.runProcess({ config: { argv: ["sleep", "1000"], tag: "run-deadline" } }, { timeoutMs: 2_000 }),
    );
    expect(error.code).toBe(Code.DeadlineExceeded);
    const exited = await waitExited({ tag: "run-deadline" });
    expect(exited.exit?.signal).toBe("SIGKILL");
  });
});

describe("bad input", () => {
  it("is refused with INVALID_ARGUMENT naming the field", async () => {
    const cases: [string, () => Promise<unknown> | Follower, string][] = [
      ["no config", () => client.runProcess({}), "config"],
      ["neither argv nor shell", () => client.runProcess({ config: {} }), "argv"],
      ["both argv and shell", () => client.runProcess({ config: { argv: ["true"], shell: "true" } }), "argv"],
      ["empty program", () => client.runProcess({ config: { argv: [""] } }), "argv"],
      ["bad env name", () => client.runProcess({ config: { argv: ["true"], env: { "1BAD": "x" } } }), "env"],
      ["bad tag", () => start({ config: { argv: ["true"], tag: "-bad" } }), "tag"],
      ["timeout too long", () => start({ config: { argv: ["true"], timeoutMs: 604_800_001 } }), "timeout_ms"],
      ["NUL in cwd", () => start({ config: { argv: ["true"], cwd: "a\0b" } }), "cwd"],
      [
        "retained output too large",
        () => start({ config: { argv: ["true"] }, retainedOutputBytes: 67_108_865n }),
        "retained_output_bytes",
      ],
      [
        "output limit too large",
        () => client.runProcess({ config: { argv: ["true"] }, outputLimitBytes: 4_194_305n }),
        "output_limit_bytes",
      ],
      ["no selector", () => client.getProcess({}), "process"],
      ["pid 0", () => client.getProcess({ process: byPid(0) }), "pid"],
      ["bad selector tag", () => client.getProcess({ process: byTag("bad tag") }), "tag"],
      ["no signal", () => client.signalProcess({ process: byPid(1) }), "signal"],
      ["page size", () => client.listProcesses({ pageSize: 1001 }), "page_size"],
      ["page token", () => client.listProcesses({ pageToken: "not a token" }), "page_token"],
    ];
    for (const [name, call, field] of cases) {
      const error = await failure(call());
      expect(error.code, name).toBe(Code.InvalidArgument);
      expect(error.rawMessage, name).toContain(field);
    }
  });

  it("answers NOT_FOUND for an unknown pid or tag", async () => {
    for (const process of [byPid(4_194_000), byTag("no-such-process")]) {
      const calls: (() => Promise<unknown>)[] = [
        () => client.getProcess({ process }),
        () => connect({ process }).toEnd(),
        () => client.sendProcessInput({ process, data: Buffer.from("x") }),
        () => client.closeProcessStdin({ process }),
        () => client.signalProcess({ process, signal: Signal.TERM }),
      ];
      for (const call of calls) expect((await failure(call())).code).toBe(Code.NotFound);
    }
  });
});

describe("ListProcesses", () => {
  it("pages through running and retained exited processes, oldest first, filtered by state", async () => {
    const own = await startTestRunner();
    try {
      const c = await own.client(ProcessService);
      for (const tag of ["l0", "l1", "l2"]) await c.runProcess({ config: { argv: ["true"], tag } });
      const streams: Follower[] = [];
      for (const tag of ["l3", "l4"]) {
        const f = start({ config: { argv: ["sleep", "1000"], tag } }, c);
        await started(f);
        streams.push(f);
      }
      const tags: string[][] = [];
      let pageToken = "";
      do {
        const page = await c.listProcesses({ pageSize: 2, pageToken });
        tags.push(page.processes.map((p) => p.tag));
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      expect(tags).toEqual([["l0", "l1"], ["l2", "l3"], ["l4"]]);
      const running = await c.listProcesses({ state: ProcessState.RUNNING });
      expect(running.processes.map((p) => p.tag)).toEqual(["l3", "l4"]);
      const exited = await c.listProcesses({ state: ProcessState.EXITED });
      expect(exited.processes.map((p) => p.tag)).toEqual(["l0", "l1", "l2"]);
      for (const p of exited.processes) {
        expect(p.exit?.exitCode).toBe(0);
        expect(p.endedAt).toBeDefined();
      }
      expect(exited.nextPageToken).toBe("");
      for (const f of streams) {
        f.cancel();
      }
    } finally {
      await own.close();
    }
  });

  it("keeps an exited process for the retention period, then forgets it", async () => {
    let now = 1_000_000;
    const manager = new ProcessManager({
      workspace: t.workspace,
      environment: (extra) => workspaceEnvironment(t.runner.context, extra),
      logger: createLogger({ service: "test", level: "silent" }),
      maxProcesses: 10,
      outputCapBytes: 4096,
      exitRetentionMs: 60_000,
      onOutput: () => {},
      clock: () => now,
    });
    const process = await manager.start({
      config: create(ProcessConfigSchema, { argv: ["true"], tag: "retained" }),
      stdin: false,
      retainedOutputBytes: 0,
    });
    await process.finished;
    const endedAt = now;
    now = endedAt + 59_999;
    expect(manager.select(create(ProcessSelectorSchema, byTag("retained"))).info().state).toBe(ProcessState.EXITED);
    expect(manager.list()).toHaveLength(1);
    now = endedAt + 60_000;
    expect(() => manager.select(create(ProcessSelectorSchema, byTag("retained")))).toThrow(/no process/);
    expect(manager.list()).toHaveLength(0);
  });
});

describe("shutdown", () => {
  it("ends every process group: SIGTERM, then SIGKILL after the grace period", async () => {
    const own = await startTestRunner(["--max-processes", "2"]);
    try {
      const c = await own.client(ProcessService);
      const polite = start({ config: { shell: "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done" } }, c);
      // Ignores SIGTERM, and so does the background child it starts (ignored signals are inherited).
      const stubborn = start(
        { config: { shell: "trap '' TERM; sleep 1000 & echo $!; while :; do sleep 0.1; done" } },
        c,
      );
      await polite.until((x) => x.stdout === "ready\n", "ready");
      await stubborn.until((x) => x.stdout.endsWith("\n"), "the background pid");
      const child = Number(stubborn.stdout.trim());
      const full = await failure(start({ config: { argv: ["true"] } }, c));
      expect(full.code).toBe(Code.ResourceExhausted);
      const runner = await own.client(RunnerService, { role: "core" });
      const res = await runner.shutdown({ gracePeriodMs: 5_000, reason: "test" });
      expect(res.processesStopped).toBe(2);
      expect(res.killedAfterGrace).toBe(1);
      await Promise.all([polite.toEnd(), stubborn.toEnd()]);
      expect(polite.exited?.status?.exitCode).toBe(0);
      expect(stubborn.exited?.status?.signal).toBe("SIGKILL");
      await poll(
        () => alive(child),
        (a) => !a,
        "the background child to be gone",
      );
      expect((await failure(start({ config: { argv: ["true"] } }, c))).code).toBe(Code.Unavailable);
      expect((await failure(c.runProcess({ config: { argv: ["true"] } }))).code).toBe(Code.Unavailable);
      const pid = polite.of<{ process: ProcessInfo }>("started")[0]?.process.pid ?? 0;
      expect((await failure(c.sendProcessInput({ process: byPid(pid) }))).code).toBe(Code.Unavailable);
      // Reads keep working after shutdown.
      expect((await c.getProcess({ process: byPid(pid) })).process?.state).toBe(ProcessState.EXITED);
    } finally {
      await own.close();
    }
  });

  it("is undone by Resume: new processes and writes are accepted again, ended ones stay ended", async () => {
    const own = await startTestRunner();
    try {
      const c = await own.client(ProcessService);
      const files = await own.client(FilesystemService);
      const runner = await own.client(RunnerService, { role: "core" });
      expect((await runner.resume({ reason: "nothing to undo" })).wasDrained).toBe(false);
      const before = start({ config: { shell: "echo ready; sleep 1000", tag: "before" } }, c);
      await before.until((x) => x.stdout === "ready\n", "ready");
      await runner.shutdown({ gracePeriodMs: 1_000, reason: "stopping" });
      await before.toEnd();
      expect((await runner.getStatus({})).state).toBe(RunnerState.DRAINED);
      expect((await failure(c.runProcess({ config: { argv: ["true"] } }))).code).toBe(Code.Unavailable);
      expect((await failure(files.writeFile({ path: "a.txt", content: new Uint8Array([1]) }))).code).toBe(
        Code.Unavailable,
      );

      expect((await runner.resume({ reason: "the save failed" })).wasDrained).toBe(true);
      expect((await runner.getStatus({})).state).toBe(RunnerState.SERVING);
      const ran = await c.runProcess({ config: { shell: "echo again" } });
      expect(Buffer.from(ran.stdout).toString()).toBe("again\n");
      await files.writeFile({ path: "a.txt", content: new Uint8Array([1]) });
      expect((await c.getProcess({ process: byTag("before") })).process?.state).toBe(ProcessState.EXITED);
      // A second stop drains again.
      await runner.shutdown({ gracePeriodMs: 100, reason: "stopping again" });
      expect((await failure(c.runProcess({ config: { argv: ["true"] } }))).code).toBe(Code.Unavailable);
    } finally {
      await own.close();
    }
  });
});

describe("output buffers", () => {
  it("keep at most their capacity, addressed by absolute offsets", () => {
    const buffer = new OutputBuffer(10);
    for (let i = 0; i < 7; i++) buffer.append(Buffer.from(`${i}abc`), i);
    expect(buffer.end).toBe(28);
    expect(buffer.retainedBytes).toBe(10);
    expect(buffer.start).toBe(18);
    expect(buffer.contents().toString()).toBe("bc5abc6abc");
    expect(buffer.read(18)?.data.toString()).toBe("bc");
    expect(buffer.read(20)?.data.toString()).toBe("5abc");
    expect(buffer.read(22)?.data.toString()).toBe("bc");
    expect(buffer.read(22)?.seq).toBe(5);
    expect(buffer.read(28)).toBeUndefined();
    expect(() => buffer.read(17)).toThrow(RangeError);
  });

  it("capture the head or the tail of RunProcess output", () => {
    const head = new OutputCapture(5, "head");
    const tail = new OutputCapture(5, "tail");
    for (const part of ["abc", "def", "ghi"]) {
      head.add(Buffer.from(part));
      tail.add(Buffer.from(part));
    }
    expect(head.bytes().toString()).toBe("abcde");
    expect(tail.bytes().toString()).toBe("efghi");
    expect(head.truncated && tail.truncated).toBe(true);
    expect(head.totalBytes).toBe(9);
  });
});
