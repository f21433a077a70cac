import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroupShimCommand } from "../src/process-cgroups.js";
import { AttachClient } from "./attach-client.js";
import { codeOf, startTestRunner, type TestRunner } from "./harness.js";

// Regular files stand in for cgroup.procs: the shim writes "0" into each; the kernel would
// move the writer, here the file keeps what was written. /dev/full stands in for a write
// the kernel refuses (as it refuses a cgroup at its limits or of another owner).
let root: string;
let cpu: string;
let memory: string;
let refusing: string;
let t: TestRunner;
let broken: TestRunner;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "devex-cgroups-test-"));
  cpu = join(root, "cpu", "repl");
  memory = join(root, "memory", "repl");
  refusing = join(root, "refusing");
  for (const dir of [cpu, memory, refusing]) await mkdir(dir, { recursive: true });
  await symlink("/dev/full", join(refusing, "cgroup.procs"));
  t = await startTestRunner(["--process-cgroups", `${cpu},${memory}`]);
  broken = await startTestRunner(["--process-cgroups", `${cpu},${refusing}`]);
});
afterAll(async () => {
  await Promise.all([t?.close(), broken?.close()]);
  await rm(root, { recursive: true, force: true });
});

const procs = async (dir: string) => readFile(join(dir, "cgroup.procs"), "utf8").catch(() => "");
const clear = async () => {
  for (const dir of [cpu, memory]) await writeFile(join(dir, "cgroup.procs"), "");
};
const untilExit = async (c: AttachClient) => {
  await c.until((client) => client.of("exit").length > 0, "exit");
  await c.finish();
};
const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("utf8");

describe("--process-cgroups", () => {
  it("starts RunProcess's programs and shells through every cgroup, argv and exit status untouched", async () => {
    const client = await t.client(ProcessService);
    await clear();
    const res = await client.runProcess({
      config: { argv: ["sh", "-c", 'printf "%s|%s|%s" "$0" "$1" "$$"; exit 7', "first arg", "second"] },
    });
    expect(text(res.stderr)).toBe("");
    // $0 and $1 as given; $$ is the pid the runner reports: the shim exec'd, it did not fork.
    expect(text(res.stdout)).toBe(`first arg|second|${res.pid}`);
    expect(res.status?.exitCode).toBe(7);
    expect(await procs(cpu)).toBe("0\n");
    expect(await procs(memory)).toBe("0\n");

    await clear();
    const shell = await client.runProcess({ config: { shell: "echo from the shell" } });
    expect(text(shell.stdout)).toBe("from the shell\n");
    expect(await procs(cpu)).toBe("0\n");
  });

  it("passes signals through to the program", async () => {
    const client = await t.client(ProcessService);
    const res = await client.runProcess({ config: { shell: "kill -TERM $$; sleep 5" } });
    expect(res.status?.signal).toBe("SIGTERM");
  });

  it("still reports a missing program as NOT_FOUND", async () => {
    const client = await t.client(ProcessService);
    expect(await codeOf(client.runProcess({ config: { argv: ["no-such-program-here"] } }))).toBe(Code.NotFound);
  });

  it("refuses to start a program whose cgroup write fails, saying which and why", async () => {
    const client = await broken.client(ProcessService);
    const marker = join(broken.workspace, "ran");
    const error = await client.runProcess({ config: { argv: ["touch", marker] } }).then(
      () => undefined,
      (e: unknown) => e as { code: Code; rawMessage: string },
    );
    expect(error?.code).toBe(Code.FailedPrecondition);
    expect(error?.rawMessage).toContain(join(refusing, "cgroup.procs"));
    expect(error?.rawMessage).toMatch(/not started/);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await readFile(marker).catch(() => "absent")).toBe("absent");
    // Nothing counts against the limit or keeps a tag.
    expect((await client.listProcesses({})).processes).toHaveLength(0);
  });

  it("starts terminal programs through the cgroups, and refuses one it cannot place", async () => {
    const terminal = await t.client(TerminalService);
    await clear();
    const c = new AttachClient(terminal, {
      target: {
        case: "create",
        value: { command: ["sh", "-c", 'echo "argv0=$0"', "named"], cols: 80, rows: 24 },
      } as never,
    });
    await untilExit(c);
    expect(c.text).toContain("argv0=named");
    expect(await procs(cpu)).toBe("0\n");
    expect(await procs(memory)).toBe("0\n");

    const missing = await startTestRunner(["--process-cgroups", join(root, "gone")]);
    try {
      const refused = await codeOf(
        (await missing.client(TerminalService)).createSession({ spec: { command: ["true"] } }),
      );
      expect(refused).toBe(Code.FailedPrecondition);
    } finally {
      await missing.close();
    }
  });

  it("in a PTY, the shim itself refuses a write the kernel fails", async () => {
    // The check before spawning cannot see this failure (the file is writable): the shim exits
    // 125 after saying why on the terminal, and the program never runs.
    const marker = join(broken.workspace, "ran-in-pty");
    const terminal = await broken.client(TerminalService);
    const c = new AttachClient(terminal, {
      target: { case: "create", value: { command: ["touch", marker], cols: 80, rows: 24 } } as never,
    });
    await untilExit(c);
    expect(c.text).toContain(`cannot enter the repl's cgroup ${refusing}`);
    expect(c.of("exit")[0]?.status?.exitCode).toBe(125);
    expect(await readFile(marker).catch(() => "absent")).toBe("absent");
  });

  it("builds a shim that keeps the program's argv after the cgroup directories", () => {
    const argv = cgroupShimCommand(["/a", "/b"], ["prog", "x y"], "status-fd");
    expect(argv.slice(0, 2)).toEqual(["/bin/sh", "-c"]);
    expect(argv.slice(3)).toEqual(["devex-cgroup", "2", "/a", "/b", "prog", "x y"]);
  });
});
