import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { detectCgroups, SandboxCgroups } from "../src/orchestrator/local/sandbox/cgroups.js";
import { createSandboxDriver, newSandboxId } from "../src/orchestrator/local/sandbox/index.js";

/** Fake cgroupfs roots: there mkdir also creates the interface files, as the kernel does. */
const fakeRoots: string[] = [];
vi.mock("node:fs/promises", async (importOriginal) => {
  const fs = await importOriginal<typeof import("node:fs/promises")>();
  const mkdir = (async (path: string, options?: Parameters<typeof fs.mkdir>[1]) => {
    const made = await fs.mkdir(path, options);
    if (fakeRoots.some((root) => path.startsWith(`${root}/`))) {
      for (const file of ["cgroup.procs", "cgroup.controllers", "cgroup.subtree_control"])
        await fs.writeFile(join(path, file), "");
    }
    return made;
  }) as typeof fs.mkdir;
  return { ...fs, default: { ...fs, mkdir }, mkdir };
});

const limits = { memoryBytes: 256 * 1024 * 1024, cpuMillicores: 500, maxProcesses: 64 };
const temps: string[] = [];
async function temp(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}
afterEach(async () => {
  for (const dir of temps.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe("cgroup v2 (fake cgroupfs)", () => {
  it("creates the group and leaves, sets limits and delegates only the user leaf", async () => {
    const root = await temp("cgroup2-");
    fakeRoots.push(root);
    await writeFile(join(root, "cgroup.controllers"), "cpuset cpu io memory pids\n");
    const hierarchies = await detectCgroups(root, "/devex");
    expect(hierarchies).toEqual({ version: 2, parents: { unified: join(root, "devex") } });
    const cgroups = SandboxCgroups.forSandbox(hierarchies, "sbx_aaaaaaaaaaaa");
    const uid = process.getuid?.() === 0 ? 200_123 : (process.getuid?.() ?? 0);
    await cgroups.create(limits, { memoryBytes: 1024 ** 3, maxProcesses: 512 }, uid, uid);
    const group = join(root, "devex", "sbx_aaaaaaaaaaaa");
    const read = (path: string) => readFileSync(join(group, path), "utf8");
    expect(readFileSync(join(root, "cgroup.subtree_control"), "utf8")).toBe("+memory +pids +cpu");
    expect(readFileSync(join(root, "devex", "cgroup.subtree_control"), "utf8")).toBe("+memory +pids +cpu");
    expect(read("cgroup.subtree_control")).toBe("+memory +pids +cpu");
    expect(read("cpu.max")).toBe("50000 100000");
    expect(read("user/memory.max")).toBe(String(limits.memoryBytes));
    expect(read("user/memory.swap.max")).toBe("0");
    expect(read("user/pids.max")).toBe("64");
    expect(read("runner/memory.max")).toBe(String(1024 ** 3));
    expect(read("runner/pids.max")).toBe("512");
    expect(Number(read("runner/cpu.weight"))).toBeGreaterThan(Number(read("user/cpu.weight")));
    expect((await stat(join(group, "user", "cgroup.procs"))).uid).toBe(uid);
    expect((await stat(join(group, "cgroup.procs"))).uid).toBe(uid);
    expect((await stat(join(group, "runner", "cgroup.procs"))).uid).toBe(process.getuid?.());
    expect(cgroups.userLeafDirs()).toEqual([join(group, "user")]);
    expect(cgroups.runnerProcsFiles()).toEqual([join(group, "runner", "cgroup.procs")]);

    await cgroups.setLimits({ ...limits, cpuMillicores: 2000, maxProcesses: 10 });
    expect(read("cpu.max")).toBe("200000 100000");
    expect(read("user/pids.max")).toBe("10");

    expect(await cgroups.pids()).toEqual([]);
    await cgroups.kill();
    await cgroups.remove();
    expect(existsSync(group)).toBe(false);
  });

  it("refuses a v2 hierarchy without the memory controller", async () => {
    const root = await temp("cgroup2-");
    await writeFile(join(root, "cgroup.controllers"), "cpu pids\n");
    await expect(detectCgroups(root, "/devex")).rejects.toThrow(/lacks the memory controller/);
  });

  it("finds co-mounted v1 controllers", async () => {
    const root = await temp("cgroup1-");
    for (const name of ["cpu,cpuacct", "memory", "pids"])
      await import("node:fs/promises").then((fs) => fs.mkdir(join(root, name)));
    const hierarchies = await detectCgroups(root, "/devex");
    expect(hierarchies).toEqual({
      version: 1,
      parents: {
        memory: join(root, "memory/devex"),
        pids: join(root, "pids/devex"),
        cpu: join(root, "cpu,cpuacct/devex"),
      },
    });
  });
});

describe("none driver", () => {
  it("runs programs directly in the sandbox dirs and kills them all", async () => {
    const root = await temp("sbx-none-");
    const driver = createSandboxDriver({ kind: "none", root, readOnlyPaths: [], logger: pino({ level: "silent" }) });
    await driver.check();
    const sandbox = await driver.create(newSandboxId(), limits);
    expect(sandbox.userCgroupDirs).toEqual([]);
    expect(sandbox.innerDirs).toEqual(sandbox.hostDirs);
    const child = sandbox.spawn(["/bin/bash", "-c", "pwd; echo $HOME; sleep 60 & sleep 60"], {
      env: {},
      stdio: ["ignore", "pipe", "ignore"],
    });
    let stdout = "";
    child.stdout?.on("data", (chunk: Buffer) => (stdout += chunk));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(stdout).toBe(`${sandbox.hostDirs.workspace}\n${sandbox.hostDirs.home}\n`);
    expect((await sandbox.pids()).length).toBe(3);
    expect(await driver.list()).toEqual([sandbox.id]);
    expect((await driver.open(sandbox.id))?.hostDirs).toEqual(sandbox.hostDirs);
    const exited = once(child, "exit");
    await sandbox.destroy();
    await exited;
    expect(await sandbox.pids()).toEqual([]);
    expect(existsSync(join(root, sandbox.id))).toBe(false);
    expect(await driver.list()).toEqual([]);
  });
});
