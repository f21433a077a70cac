import { spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createSandboxDriver,
  newSandboxId,
  type Sandbox,
  type SandboxDriver,
  type SandboxDriverOptions,
  SandboxSetupError,
} from "../src/orchestrator/local/sandbox/index.js";

const canRun = process.getuid?.() === 0 && spawnSync("bwrap", ["--version"]).status === 0;
const limits = { memoryBytes: 64 * 1024 * 1024, cpuMillicores: 1000, maxProcesses: 20 };

/** Runs `script` with bash inside the sandbox (runner leaf) and collects its output. */
async function run(sandbox: Sandbox, script: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = sandbox.spawn(["/bin/bash", "-c", script], {
    env: { LANG: "C.UTF-8" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (chunk: Buffer) => (stdout += chunk));
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk));
  const [code] = (await once(child, "close")) as [number | null];
  return { code, stdout, stderr };
}

/** True while `pid` runs (a zombie waiting for its parent to reap it does not count). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** The runner's shim: moves itself into the user leaf, then runs the program there. */
function inUserLeaf(sandbox: Sandbox, command: string): string {
  const moves = sandbox.userCgroupDirs.map((dir) => `echo 0 > ${dir}/cgroup.procs`).join(" && ");
  return `sh -c '${moves} && exec "$0" "$@"' ${command}`;
}

describe.skipIf(!canRun)("bwrap sandbox", () => {
  let root: string;
  let dataDir: string;
  let options: SandboxDriverOptions;
  let driver: SandboxDriver;
  let a: Sandbox;
  let b: Sandbox;
  const cgroupParent = `devex-test-${process.pid}`;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sbx-"));
    dataDir = await mkdtemp(join(tmpdir(), "core-data-"));
    await chmod(dataDir, 0o755);
    await writeFile(join(dataDir, "secret"), "s3cret", { mode: 0o644 });
    options = {
      kind: "bwrap",
      root,
      readOnlyPaths: [dirname(process.execPath)],
      cgroupParent,
      logger: pino({ level: "silent" }),
    };
    driver = createSandboxDriver(options);
    await driver.check();
    a = await driver.create(newSandboxId(), limits);
    b = await driver.create(newSandboxId(), limits);
  });

  afterAll(async () => {
    await a?.destroy().catch(() => undefined);
    await b?.destroy().catch(() => undefined);
    for (const controller of ["memory", "pids", "cpu", "freezer"]) {
      const own = readFileSync("/proc/self/cgroup", "utf8").match(new RegExp(`:${controller}:(.*)`))?.[1] ?? "/";
      await rm(join("/sys/fs/cgroup", controller, own, cgroupParent), { recursive: false }).catch(() => undefined);
      spawnSync("rmdir", [join("/sys/fs/cgroup", controller, own, cgroupParent)]);
    }
    await rm(root, { recursive: true, force: true });
    await rm(dataDir, { recursive: true, force: true });
  });

  it("runs as the leased uid, mapped to itself, as `user`", async () => {
    expect(a.uid).toBeGreaterThanOrEqual(200_000);
    expect(a.uid).not.toBe(b.uid);
    const { stdout, code } = await run(
      a,
      "id -u; id -g; whoami; hostname; ls -ld /home/user/workspace | awk '{print $3}'",
    );
    expect(code).toBe(0);
    expect(stdout.split("\n")).toEqual([String(a.uid), String(a.gid), "user", "repl", "user", ""]);
    // From the host, a process in the sandbox has the leased uid and its namespace maps it to itself.
    const child = a.spawn(["/bin/sleep", "30"], { env: {}, stdio: "ignore" });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const sleeper = (await a.pids()).find((pid) =>
      readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("/bin/sleep"),
    );
    expect(sleeper).toBeDefined();
    const status = readFileSync(`/proc/${sleeper}/status`, "utf8");
    expect(status).toMatch(new RegExp(`^Uid:\\s+${a.uid}\\s+${a.uid}\\s+${a.uid}\\s+${a.uid}$`, "m"));
    expect(status).toMatch(/^CapEff:\s+0+$/m);
    expect(readFileSync(`/proc/${sleeper}/uid_map`, "utf8").trim().split(/\s+/)).toEqual([
      String(a.uid),
      String(a.uid),
      "1",
    ]);
    child.kill("SIGKILL");
    await a.kill();
  });

  it("sees only its own dirs and a selected read-only system", async () => {
    const secret = join(dataDir, "secret");
    const { stdout } = await run(
      a,
      `for p in /root ${secret} ${b.hostDirs.workspace} ${root} /home/runner /work/main/package.json /var /sys /etc/shadow /etc/ssh/ssh_host_rsa_key; do
         [ -e "$p" ] && echo "visible $p"; done
       cat /etc/passwd | grep -c '^user:'; ls /home; test -r /etc/ssl/certs && echo certs; node -e 'console.log(40 + 2)'`,
    );
    expect(stdout.split("\n")).toEqual(["1", "user", "certs", "42", ""]);
  });

  it("writes only to workspace, home and tmp", async () => {
    const { stdout } = await run(
      a,
      `for p in /home/user/workspace/f /home/user/f /tmp/f /run/devex/f /usr/f /etc/f /f /run/f; do
         touch "$p" 2>/dev/null && echo "ok $p" || echo "no $p"; done`,
    );
    expect(stdout.trim().split("\n")).toEqual([
      "ok /home/user/workspace/f",
      "ok /home/user/f",
      "ok /tmp/f",
      "ok /run/devex/f",
      "no /usr/f",
      "no /etc/f",
      "no /f",
      "no /run/f",
    ]);
    expect(existsSync(join(a.hostDirs.workspace, "f"))).toBe(true);
    expect(existsSync(join(a.hostDirs.run, "f"))).toBe(true);
  });

  it("sees only its own processes", async () => {
    const { stdout } = await run(a, "ps -e -o comm= > /tmp/ps; sort -u /tmp/ps | tr '\\n' ' '");
    expect(stdout.trim()).toBe("bash bwrap ps");
  });

  it("has its own loopback and no way out", async () => {
    const server: Server = createServer((socket) => socket.end("host"));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const port = (server.address() as { port: number }).port;
    const listen =
      "python3 -c \"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',3000)); s.listen(); print('listening', flush=True); time.sleep(1)\"";
    const [ra, rb, host] = await Promise.all([
      run(a, listen),
      run(b, listen),
      run(a, `timeout 2 bash -c 'echo > /dev/tcp/127.0.0.1/${port}' 2>/dev/null && echo reached || echo refused`),
    ]);
    server.close();
    expect(ra.stdout.trim()).toBe("listening");
    expect(rb.stdout.trim()).toBe("listening");
    expect(host.stdout.trim()).toBe("refused");
  });

  it("cannot make namespaces, mount or push terminal input", async () => {
    const { stdout } = await run(
      a,
      `for c in "unshare -U true" "unshare -n true" "unshare -m true" "unshare -p -f true"; do $c 2>/dev/null && echo "ok $c" || echo "no $c"; done
       python3 -c "
import errno, fcntl, termios
try:
    fcntl.ioctl(0, termios.TIOCSTI, b'x')
except OSError as e:
    print('TIOCSTI', errno.errorcode[e.errno])
"
       strace -V >/dev/null 2>&1; python3 -c "import os; print('fork', os.fork() >= 0)"`,
    );
    expect(stdout).toContain("no unshare -U true\nno unshare -n true\nno unshare -m true\nno unshare -p -f true\n");
    expect(stdout).toContain("TIOCSTI EPERM");
    expect(stdout).toContain("fork True");
  });

  it("lets the uid move programs into the user leaf, never into the runner leaf", async () => {
    const { stdout } = await run(
      a,
      `echo 0 > ${a.userCgroupDirs[0]}/cgroup.procs && echo moved
       echo 999 > ${a.userCgroupDirs[0]}/pids.max 2>/dev/null && echo raised || echo fixed
       mkdir ${a.userCgroupDirs[0]}/escape 2>/dev/null && echo escaped || echo contained`,
    );
    expect(stdout.split("\n")).toEqual(["moved", "fixed", "contained", ""]);
    const runnerLeaf = JSON.parse(readFileSync(join(root, ".state", `${a.id}.json`), "utf8")).cgroups.groups.pids;
    const write = spawnSync("setpriv", [
      `--reuid=${a.uid}`,
      `--regid=${a.gid}`,
      "--clear-groups",
      "--",
      "sh",
      "-c",
      `echo $$ > ${runnerLeaf}/runner/cgroup.procs`,
    ]);
    expect(write.status).not.toBe(0);
  });

  it("caps processes in the user leaf while the runner leaf still works", async () => {
    const bomb = inUserLeaf(
      a,
      `python3 -c "
import subprocess
started = 0
try:
    for _ in range(${2 * limits.maxProcesses}):
        subprocess.Popen(['sleep', '2'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); started += 1
except OSError as e:
    print('refused', e.errno)
print('started', started)
"`,
    );
    // bwrap's init returns once every process in the sandbox has exited: the sleeps are short.
    const { stdout } = await run(a, `${bomb}; echo runner $(echo alive)`);
    expect(stdout).toMatch(/refused 11/);
    const started = Number(/started (\d+)/.exec(stdout)?.[1]);
    expect(started).toBeLessThan(limits.maxProcesses);
    expect(stdout).toContain("runner alive");
    expect(await a.pids()).toEqual([]);
  });

  it("OOM-kills a memory hog in the user leaf and keeps the runner leaf", async () => {
    const hog = inUserLeaf(a, `python3 -c "b = b'x' * (${2 * limits.memoryBytes}); print('survived')"`);
    const { stdout, stderr } = await run(a, `${hog}; echo "hog exit $?"; echo runner alive`);
    expect(stderr).toContain("Killed");
    expect(stdout).not.toContain("survived");
    expect(stdout).toContain("hog exit 137");
    expect(stdout).toContain("runner alive");
  });

  it("reopens after a restart from its record", async () => {
    const again = createSandboxDriver(options);
    expect(await again.list()).toEqual([a.id, b.id].sort());
    const reopened = await again.open(a.id);
    expect(reopened?.uid).toBe(a.uid);
    expect(reopened?.userCgroupDirs).toEqual(a.userCgroupDirs);
    expect((await run(reopened as Sandbox, "id -u")).stdout.trim()).toBe(String(a.uid));
  });

  it("kills while another handle destroys it (two cores, or a stop racing an exit) without an error", async () => {
    for (let round = 0; round < 5; round++) {
      const sandbox = await driver.create(newSandboxId(), limits);
      sandbox.spawn(["/bin/sleep", "30"], { env: {}, stdio: "ignore" });
      for (let i = 0; i < 200 && (await sandbox.pids()).length === 0; i++) await new Promise((r) => setTimeout(r, 5));
      const other = (await driver.open(sandbox.id)) as Sandbox;
      await Promise.all([sandbox.destroy(), other.kill(), other.kill(), other.signal("SIGTERM")]);
      expect(await driver.open(sandbox.id)).toBeUndefined();
      expect(await other.pids()).toEqual([]);
    }
  });

  it("destroy leaves no process, cgroup, lease or dir", async () => {
    const sandbox = await driver.create(newSandboxId(), limits);
    sandbox.spawn(["/bin/bash", "-c", `${inUserLeaf(sandbox, "sleep 60")} & sleep 60`], { env: {}, stdio: "ignore" });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const pids = await sandbox.pids();
    expect(pids.length).toBeGreaterThanOrEqual(4);
    const record = JSON.parse(readFileSync(join(root, ".state", `${sandbox.id}.json`), "utf8"));
    await sandbox.destroy();
    for (const pid of pids) expect(alive(pid)).toBe(false);
    for (const group of Object.values(record.cgroups.groups) as string[]) expect(existsSync(group)).toBe(false);
    expect(existsSync(join(root, ".leases", String(sandbox.uid)))).toBe(false);
    expect(existsSync(join(root, sandbox.id))).toBe(false);
    expect(await driver.list()).not.toContain(sandbox.id);
  });

  it("keeps the dirs when asked", async () => {
    const sandbox = await driver.create(newSandboxId(), limits);
    await run(sandbox, "echo kept > /home/user/workspace/file");
    await sandbox.destroy({ keepDirs: true });
    expect(readFileSync(join(sandbox.hostDirs.workspace, "file"), "utf8")).toBe("kept\n");
    expect(existsSync(join(root, ".leases", String(sandbox.uid)))).toBe(false);
    await rm(join(root, sandbox.id), { recursive: true });
  });

  it("a failed create leaves no lease, cgroup or dir behind", async () => {
    const id = newSandboxId();
    const own = readFileSync("/proc/self/cgroup", "utf8").match(/:pids:(.*)/)?.[1] ?? "/";
    // A file where the pids group should go makes the cgroup step fail after the lease and dirs.
    const blocker = join("/sys/fs/cgroup/pids", own, cgroupParent, id);
    await mkdir(join(blocker, "runner"), { recursive: true });
    await expect(driver.create(id, limits)).rejects.toThrow();
    spawnSync("rmdir", [join(blocker, "runner")]);
    expect(await readdir(join(root, ".leases"))).toHaveLength(2);
    expect(existsSync(join(root, id))).toBe(false);
    expect(
      existsSync(
        join(
          "/sys/fs/cgroup/memory",
          readFileSync("/proc/self/cgroup", "utf8").match(/:memory:(.*)/)?.[1] ?? "/",
          cgroupParent,
          id,
        ),
      ),
    ).toBe(false);
    expect(await driver.list()).toEqual([a.id, b.id].sort());
  });

  it("refuses a root whose socket paths would be too long", async () => {
    const long = createSandboxDriver({ ...options, root: join(root, "x".repeat(80)) });
    await expect(long.create(newSandboxId(), limits)).rejects.toThrow(SandboxSetupError);
    await expect(long.create(newSandboxId(), limits)).rejects.toThrow(/too long for Unix sockets/);
  });

  it("creates and starts `true` quickly", async () => {
    const timesMs: number[] = [];
    for (let i = 0; i < 20; i++) {
      const start = performance.now();
      const sandbox = await driver.create(newSandboxId(), limits);
      const child = sandbox.spawn(["/bin/true"], { env: {}, stdio: "ignore" });
      const [code] = await once(child, "exit");
      timesMs.push(performance.now() - start);
      expect(code).toBe(0);
      await sandbox.destroy();
    }
    timesMs.sort((x, y) => x - y);
    console.log(
      `create + spawn true: median ${timesMs[10]?.toFixed(1)} ms, min ${timesMs[0]?.toFixed(1)}, max ${timesMs[19]?.toFixed(1)}`,
    );
    expect(timesMs[10]).toBeLessThan(2000);
  });
});

describe.skipIf(!canRun)("bwrap driver setup", () => {
  it("names the cause and the fix when a read-only path is missing", async () => {
    const root = await mkdtemp(join(tmpdir(), "sbx-"));
    const driver = createSandboxDriver({
      kind: "bwrap",
      root,
      readOnlyPaths: ["/nonexistent/node"],
      logger: pino({ level: "silent" }),
    });
    await expect(driver.check()).rejects.toThrow(/read-only path \/nonexistent\/node does not exist/);
    await rm(root, { recursive: true, force: true });
  });

  it("binds a read-only path under a folder closed to other uids (a 0700 checkout) at its own path", async () => {
    const root = await mkdtemp(join(tmpdir(), "sbx-"));
    const closed = await mkdtemp(join(tmpdir(), "closed-checkout-"));
    const tool = join(closed, "bin");
    await mkdir(tool, { mode: 0o755 });
    await writeFile(join(tool, "hello"), "#!/bin/sh\necho hello from a closed checkout\n", { mode: 0o755 });
    expect((await stat(closed)).mode & 0o777).toBe(0o700);
    const driver = createSandboxDriver({
      kind: "bwrap",
      root,
      readOnlyPaths: [tool],
      logger: pino({ level: "silent" }),
    });
    const sandbox = await driver.create(newSandboxId(), limits);
    try {
      const { stdout, code } = await run(sandbox, `${tool}/hello; touch ${tool}/x 2>/dev/null || echo read-only`);
      expect(code).toBe(0);
      expect(stdout).toBe("hello from a closed checkout\nread-only\n");
      // The checkout itself stays closed: only the staged copy is opened to the sandbox's uid.
      expect((await stat(closed)).mode & 0o777).toBe(0o700);
    } finally {
      await sandbox.destroy();
      await rm(root, { recursive: true, force: true });
      await rm(closed, { recursive: true, force: true });
    }
  });

  it("names the fix when the root is not traversable", async () => {
    const parent = await mkdtemp(join(tmpdir(), "private-"));
    const driver = createSandboxDriver({
      kind: "bwrap",
      root: join(parent, "r"),
      readOnlyPaths: [],
      logger: pino({ level: "silent" }),
    });
    await expect(driver.check()).rejects.toThrow(/chmod o\+x/);
    await rm(parent, { recursive: true, force: true });
  });
});
