/**
 * Sandbox escapes, tried from inside real repls of a live core process (the bundle `npm run build`
 * makes) with the bwrap sandbox: commands run in a repl through its runner's ProcessService, reached
 * through core's repl origin with the runner token core hands out. Each case tries to reach
 * something a repl must not (core's keys and data, another repl's files and processes, host ports,
 * the rest of the filesystem, new namespaces) and asserts the refusal, each next to a control that
 * shows the same probe works where it is allowed; the limits cases check that a fork bomb and a
 * memory hog hurt only themselves. Needs root, bubblewrap and cgroups (as CI runs it).
 */

import { execFile } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import * as http from "node:http";
import * as net from "node:net";
import { join } from "node:path";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ReplService, ReplState } from "@devex/gen/devex/core/v1/repl_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { bufCurl, freePort } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";

/** Limits every repl's programs get here: small enough for the fork bomb and memory cases to hit. */
const MAX_PROCESSES = 64;
const MEMORY_BYTES = 128 * 1024 * 1024;

let core: CoreProcess;
let apiKey: string;
let repls: Client<typeof ReplService>;
let previewPort: number;
/** A TCP server on the host's loopback that no repl may reach (a stand-in for Redis). */
let hostServer: net.Server;
let hostServerPort: number;
let hostServerConnections = 0;

interface TestRepl {
  id: string;
  process: Client<typeof ProcessService>;
  /** The repl's uid, as `id -u` inside it says. */
  uid: number;
}

interface Ran {
  code: number | undefined;
  signal: string;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

/** A ProcessService client for a repl, fetching a fresh runner token through GetReplAccess when the last is old. */
function processClient(replId: string): Client<typeof ProcessService> {
  let token: { value: string; atMs: number } | undefined;
  const auth: Interceptor = (next) => async (req) => {
    if (!token || Date.now() - token.atMs > 20_000) {
      const { access } = await repls.getReplAccess({ replId });
      token = { value: access?.token ?? "", atMs: Date.now() };
    }
    req.header.set("authorization", `Bearer ${token.value}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: `${core.replUrl}/${replId}/`, interceptors: [auth] });
  return createClient(ProcessService, transport);
}

/** Runs a bash script inside the repl and returns how it ended and what it wrote. */
async function sh(repl: TestRepl, script: string, timeoutMs = 20_000): Promise<Ran> {
  const res = await repl.process.runProcess({ config: { argv: ["bash", "-c", script], timeoutMs } });
  return {
    code: res.status?.exitCode,
    signal: res.status?.signal ?? "",
    timedOut: res.timedOut,
    stdout: Buffer.from(res.stdout).toString(),
    stderr: Buffer.from(res.stderr).toString(),
  };
}

/** Runs a script that must succeed, and returns its stdout. */
async function ok(repl: TestRepl, script: string): Promise<string> {
  const ran = await sh(repl, script);
  expect(ran, `${script} should succeed`).toMatchObject({ code: 0, signal: "", timedOut: false });
  return ran.stdout;
}

/** Runs a script that must fail (exit non-zero by itself, not by a timeout), and returns what it wrote. */
async function refused(repl: TestRepl, script: string): Promise<Ran> {
  const ran = await sh(repl, script);
  expect(ran.timedOut, `${script} timed out`).toBe(false);
  expect(ran.code ?? -1, `${script} should fail, wrote ${JSON.stringify(ran.stdout)}`).not.toBe(0);
  return ran;
}

async function createStarted(name: string): Promise<TestRepl> {
  const { repl } = await repls.createRepl({ name, templateName: "blank" });
  const id = repl?.id ?? "";
  const started = await repls.startRepl({ replId: id });
  expect(started.repl?.state).toBe(ReplState.RUNNING);
  const handle: TestRepl = { id, process: processClient(id), uid: 0 };
  handle.uid = Number((await ok(handle, "id -u")).trim());
  return handle;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Host processes: pid, real uid and argv, read from the host's /proc. */
async function hostProcesses(): Promise<{ pid: number; uid: number; argv: string[] }[]> {
  const found: { pid: number; uid: number; argv: string[] }[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = await readFile(`/proc/${name}/status`, "utf8");
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
      const argv = (await readFile(`/proc/${name}/cmdline`, "utf8")).split("\0").filter(Boolean);
      found.push({ pid: Number(name), uid, argv });
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

/** The host path of a repl's workspace: the sandbox dir whose workspace holds `marker`. */
async function hostWorkspace(marker: string): Promise<string> {
  const root = join(core.dataDir, "sandboxes");
  for (const id of await readdir(root)) {
    const workspace = join(root, id, "home", "workspace");
    if (
      await stat(join(workspace, marker)).then(
        () => true,
        () => false,
      )
    )
      return workspace;
  }
  throw new Error(`no sandbox workspace under ${root} holds ${marker}`);
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A GET to core's preview origin for the host of `url` (`*.localhost` need not resolve here). */
function previewGet(url: string, cookie?: string): Promise<Answer> {
  const parsed = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port: Number(parsed.port),
        path: `${parsed.pathname}${parsed.search}`,
        headers: { host: parsed.host, ...(cookie ? { cookie } : {}) },
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** Opens a repl's private preview: follows the token link by hand, keeping the cookie it sets. */
async function openPreview(replId: string, port: number): Promise<{ origin: string; cookie: string }> {
  const { url } = await repls.getPreviewUrl({ replId, port });
  const signIn = await previewGet(url);
  expect(signIn.status).toBe(303);
  const cookie = String(signIn.headers["set-cookie"]?.[0] ?? "").split(";")[0] as string;
  expect(cookie).toMatch(/^devex_preview=./);
  return { origin: new URL(url).origin, cookie };
}

let a: TestRepl;
let b: TestRepl;
/** Host files of core that no repl may read. */
let secrets: string[];

beforeAll(async () => {
  hostServer = net.createServer((socket) => {
    hostServerConnections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => hostServer.listen(0, "127.0.0.1", resolve));
  hostServerPort = (hostServer.address() as net.AddressInfo).port;
  previewPort = await freePort();
  // One core for every case: the fork bomb and memory limits apply to every repl, which the others do not mind.
  core = await startCoreProcess([
    "--sandbox",
    "bwrap",
    "--sandbox-max-processes",
    String(MAX_PROCESSES),
    "--sandbox-memory-bytes",
    String(MEMORY_BYTES),
    "--preview-port",
    String(previewPort),
  ]);
  apiKey = await core.devApiKey();
  repls = core.client(ReplService, apiKey);
  [a, b] = await Promise.all([createStarted("escape-a"), createStarted("escape-b")]);
  const keyFiles = await readdir(join(core.dataDir, "keys"));
  expect(keyFiles.length).toBeGreaterThan(0);
  secrets = [apiKey];
  for (const file of keyFiles) {
    const text = (await readFile(join(core.dataDir, "keys", file), "utf8")).trim();
    // The base64 body of a PEM (its longest line) says whether any of it leaked.
    const longest = text.split("\n").sort((x, y) => y.length - x.length)[0] ?? "";
    if (longest.length >= 16) secrets.push(longest);
  }
}, 90_000);

afterAll(async () => {
  await core?.stop();
  await core?.cleanup();
  await new Promise((resolve) => hostServer?.close(resolve));
});

describe("a repl in the bwrap sandbox", () => {
  it("runs as its own unprivileged uid, one per repl", () => {
    expect(a.uid).toBeGreaterThanOrEqual(200_000);
    expect(b.uid).toBeGreaterThanOrEqual(200_000);
    expect(a.uid).not.toBe(b.uid);
  });

  it("serves the README's buf curl session through the repl origin: reflection and RunProcess", async () => {
    const base = `${core.replUrl}/${a.id}`;
    const listed = await bufCurl(["--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", base]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain("devex.runner.v1.ProcessService/RunProcess");
    const { access } = await repls.getReplAccess({ replId: a.id });
    const ran = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-H",
      `Authorization: Bearer ${access?.token}`,
      "-d",
      '{"config":{"argv":["uname","-s"]}}',
      `${base}/devex.runner.v1.ProcessService/RunProcess`,
    ]);
    expect(ran.code, ran.stderr).toBe(0);
    const { stdout } = JSON.parse(ran.stdout) as { stdout: string };
    expect(Buffer.from(stdout, "base64").toString()).toBe("Linux\n");
  });

  it("1. cannot read core's keys or data directory", async () => {
    const dir = core.dataDir;
    // Control: the probes do read what is there (the repl's own workspace).
    expect(
      await ok(
        a,
        "echo visible > /home/user/workspace/own.txt && cat /home/user/workspace/own.txt && ls /home/user/workspace",
      ),
    ).toContain("visible");
    const probes = [
      `cat ${dir}/keys/*`,
      `ls ${dir}/keys`,
      `ls ${dir}`,
      `ls -d ${dir}`,
      `cat ${dir}/dev-api-key`,
      `ls ${dir}/state`,
      "ls /root",
      "cat /root/.bash_history",
      "cd /home/user/workspace && cat ../../keys/*",
      "cd /home/user/workspace && cat ../dev-api-key ../../dev-api-key ../../../dev-api-key",
      "cd /home/user/workspace && ls ../../keys ../keys ../../../keys",
      `cat ${dir}/sandboxes/.state/*`,
      "cat /etc/shadow",
    ];
    for (const probe of probes) {
      const ran = await refused(a, probe);
      for (const secret of secrets) {
        expect(ran.stdout).not.toContain(secret);
        expect(ran.stderr).not.toContain(secret);
      }
    }
    // Nowhere the repl can see holds core's files, and no process it sees has a secret in its environment or argv.
    const found = await sh(
      a,
      "find / \\( -path /proc -o -path /sys -o -path /usr \\) -prune -o \\( -name dev-api-key -o -name keys -o -name 'devex-core-test-*' \\) -print 2>/dev/null; " +
        // The environment and command line of the sandbox's own processes (bwrap as pid 1, the
        // runner), not of this probe, whose own script names what it looks for.
        "for p in /proc/[0-9]*; do case $(cat $p/comm 2>/dev/null) in bwrap|devex-runner) " +
        "cat $p/environ $p/cmdline 2>/dev/null | tr '\\0' '\\n';; esac; done",
    );
    expect(found.stdout).not.toMatch(/dev-api-key|\/keys\b|devex-core-test-/);
    for (const secret of secrets) expect(found.stdout).not.toContain(secret);
    expect(found.stdout).not.toContain("PRIVATE KEY");
  });

  it("1b. even as its uid outside the sandbox, cannot read core's data (defence in depth)", async () => {
    // What code that broke out of its namespaces would be: a process of the repl's uid on the host.
    // The data directory lets it through to its sandbox folder only; every other entry is closed.
    const asReplUid = (command: string) =>
      new Promise<{ code: number | null; stdout: string }>((resolve) => {
        execFile(
          "setpriv",
          [`--reuid=${a.uid}`, `--regid=${a.uid}`, "--clear-groups", "--", "bash", "-c", command],
          (error, stdout) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout }),
        );
      });
    const dir = core.dataDir;
    const entries = (await readdir(dir)).filter((name) => name !== "sandboxes");
    expect(entries).toEqual(expect.arrayContaining(["keys", "state", "dev-api-key"]));
    for (const name of entries) {
      // Read a file, list a folder: either is refused.
      const path = join(dir, name);
      const probe = await asReplUid((await stat(path)).isDirectory() ? `ls ${path}` : `cat ${path}`);
      expect(probe.code, name).not.toBe(0);
    }
    for (const probe of [`ls ${dir}`, `cat ${dir}/keys/*`, `cat ${dir}/state/*`, `ls ${dir}/objects`]) {
      expect((await asReplUid(probe)).code, probe).not.toBe(0);
    }
    // Control: the same uid does reach its own sandbox's workspace that way.
    const own = join(await hostWorkspace("own.txt"), "own.txt");
    expect((await asReplUid(`cat ${own}`)).stdout).toBe("visible\n");
  });

  it("2. cannot read or write another repl's workspace", async () => {
    await ok(b, "echo b-secret > /home/user/workspace/b-marker.txt");
    const theirs = await hostWorkspace("b-marker.txt");
    const mine = await hostWorkspace("own.txt").catch(() => undefined);
    expect(theirs).not.toBe(mine);
    for (const probe of [
      `cat ${theirs}/b-marker.txt`,
      `ls ${theirs}`,
      `echo pwned > ${theirs}/pwned.txt`,
      `cat ${join(theirs, "..", "home")}/*`,
      `ls ${join(theirs, "..")}`,
      `ls ${join(core.dataDir, "sandboxes")}`,
    ]) {
      const ran = await refused(a, probe);
      expect(ran.stdout).not.toContain("b-secret");
    }
    await expect(stat(join(theirs, "pwned.txt"))).rejects.toMatchObject({ code: "ENOENT" });
    expect(await ok(b, "cat /home/user/workspace/b-marker.txt; ls /home/user/workspace")).not.toContain("pwned");
  });

  it("3. cannot see, signal or trace another repl's processes", async () => {
    const stream = b.process.startProcess({ config: { argv: ["sleep", "1000"], tag: "b-sleeper" } });
    for await (const event of stream) {
      if (event.event.case === "started") break;
    }
    const sleeper = await until("B's sleep on the host", async () =>
      (await hostProcesses()).find((p) => p.argv[0] === "sleep" && p.argv[1] === "1000" && p.uid === b.uid),
    );
    expect(sleeper.uid).not.toBe(0);
    expect(sleeper.uid).not.toBe(a.uid);
    // Control: A does see its own processes, and B sees its sleep.
    expect(await ok(b, "ps -ef")).toContain("sleep 1000");
    const own = await ok(a, "sleep 999 & ps -ef; kill $!");
    expect(own).toContain("sleep 999");
    const listed = await ok(a, "ps -ef; ls /proc");
    expect(listed).not.toContain("sleep 1000");
    expect(listed).not.toContain(String(b.uid));
    expect(listed.split(/\s+/)).not.toContain(String(sleeper.pid));
    await refused(a, `test -e /proc/${sleeper.pid}`);
    await refused(a, `cat /proc/${sleeper.pid}/environ`);
    await refused(a, `ls /proc/${sleeper.pid}/root/`);
    await refused(a, `kill -9 ${sleeper.pid}`);
    // Control: the ptrace probe runs (python3 and ctypes are there, so its failure is the refusal).
    await ok(a, "python3 -c 'import ctypes; ctypes.CDLL(None).ptrace'");
    // ptrace(PTRACE_ATTACH) of B's sleep by its host pid.
    await refused(
      a,
      `python3 -c 'import ctypes,sys; libc=ctypes.CDLL(None, use_errno=True); sys.exit(0 if libc.ptrace(16, ${sleeper.pid}, 0, 0) == 0 else 1)'`,
    );
    const alive = await readFile(`/proc/${sleeper.pid}/status`, "utf8");
    expect(alive).toMatch(/^State:\s+S/m);
    expect(Number(/^Uid:\s+(\d+)/m.exec(alive)?.[1])).toBe(b.uid);
    // B's sleep is still listed by B's runner, and A's runner still answers.
    expect(await ok(b, "ps -ef")).toContain("sleep 1000");
  });

  it("5. cannot write outside its workspace, home and /tmp", async () => {
    for (const path of ["/etc/x", "/usr/x", "/x", "/work/x", "/bin/x", "/var/x", "/root/x", "/proc/x", "/run/x"]) {
      await refused(a, `touch ${path}`);
    }
    await refused(a, "echo 1 > /proc/sys/kernel/hostname");
    await refused(a, "mount -t tmpfs none /home/user/workspace");
    await refused(
      a,
      'for f in /run/cgroup/*/memory.limit_in_bytes /run/cgroup/*/pids.max /run/cgroup/*/memory.max; do [ -e "$f" ] || continue; echo 999999999999 > "$f" && exit 0; done; exit 1',
    );
    for (const path of ["/etc/x", "/usr/x", "/x", "/work/x"]) {
      await expect(stat(path)).rejects.toMatchObject({ code: "ENOENT" });
    }
    expect(
      await ok(
        a,
        "touch /home/user/workspace/x /home/user/x /tmp/x && ls -d /home/user/workspace/x /home/user/x /tmp/x",
      ),
    ).toBe("/home/user/workspace/x\n/home/user/x\n/tmp/x\n");
  });

  it("9. cannot make new namespaces (seccomp and --disable-userns)", async () => {
    // Control: unshare itself runs.
    await ok(a, "unshare --help >/dev/null");
    for (const flags of ["-U", "-n", "-m", "-p -f", "-U -r", "-i", "-u", "-C"]) {
      await refused(a, `unshare ${flags} true`);
    }
    await refused(
      a,
      "python3 -c 'import os,sys\nfor f in (os.CLONE_NEWUSER, os.CLONE_NEWNET, os.CLONE_NEWNS):\n  try:\n    os.unshare(f); sys.exit(0)\n  except OSError: pass\nsys.exit(1)'",
    );
  });

  it("8. two repls both serve port 3000, and each preview shows its own", async () => {
    const serve = async (repl: TestRepl, content: string) => {
      await ok(repl, `printf '%s' '${content}' > /home/user/workspace/index.html`);
      const stream = repl.process.startProcess({
        config: {
          argv: ["python3", "-m", "http.server", "3000", "--bind", "127.0.0.1"],
          cwd: "/home/user/workspace",
          tag: "web",
        },
      });
      for await (const event of stream) {
        if (event.event.case === "started") break;
      }
    };
    await Promise.all([serve(a, "served by repl A"), serve(b, "served by repl B")]);
    const [previewA, previewB] = await Promise.all([openPreview(a.id, 3000), openPreview(b.id, 3000)]);
    expect(previewA.origin).not.toBe(previewB.origin);
    const page = (preview: { origin: string; cookie: string }) =>
      until(`${preview.origin}/index.html`, async () => {
        const answer = await previewGet(`${preview.origin}/index.html`, preview.cookie);
        return answer.status === 200 ? answer.body : undefined;
      });
    expect(await page(previewA)).toBe("served by repl A");
    expect(await page(previewB)).toBe("served by repl B");
    // One repl's cookie opens nothing of the other's.
    const crossed = await previewGet(`${previewB.origin}/index.html`, previewA.cookie);
    expect(crossed.status).toBeGreaterThanOrEqual(400);
    expect(crossed.body).not.toContain("served by repl");
  });

  it("4. cannot connect to core's ports or to the host's loopback", async () => {
    // Control: /dev/tcp does connect to what listens in the repl itself (case 8's server on 3000).
    await ok(a, "exec 3<>/dev/tcp/127.0.0.1/3000");
    const ports = {
      api: Number(new URL(core.url).port),
      repl: Number(new URL(core.replUrl).port),
      preview: previewPort,
      host: hostServerPort,
    };
    for (const [what, port] of Object.entries(ports)) {
      const ran = await refused(a, `timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/${port}'`);
      expect(ran.code, `${what} port ${port}`).not.toBe(124);
    }
    // Nor any other address of the host, nor the outside world (the repl has a loopback only).
    const ran = await sh(a, "cat /proc/net/dev; ip -o addr 2>/dev/null || true");
    expect(ran.stdout).not.toMatch(/^\s*(eth|ens|enp|wl|docker|veth|br)/m);
    await refused(a, "timeout 5 bash -c 'exec 3<>/dev/tcp/1.1.1.1/80'");
    expect(hostServerConnections).toBe(0);
  });

  it("6. survives a fork bomb: the limit holds, the runner answers, the repl stops with a snapshot", async () => {
    // A counting bomb: forks until refused, so the limit shows in the count.
    const counted = await ok(
      a,
      "python3 -c 'import os,time,signal\nn=0\nkids=[]\nwhile n<500:\n  try: pid=os.fork()\n  except OSError: break\n  if pid==0:\n    time.sleep(60); os._exit(0)\n  kids.append(pid); n+=1\nprint(n)\nfor k in kids: os.kill(k, signal.SIGKILL)\nfor k in kids: os.waitpid(k, 0)'",
    );
    const forks = Number(counted.trim());
    expect(forks).toBeGreaterThan(8);
    expect(forks).toBeLessThan(MAX_PROCESSES);

    const loop = await sh(
      a,
      "timeout -s KILL 5 bash -c 'for i in $(seq 200); do sleep 30 & done; wait' >/dev/null 2>&1; echo done",
      30_000,
    );
    expect(loop.timedOut).toBe(false);
    // The real thing, killed as a process group after 5 s, while the runner keeps answering.
    const bomb = sh(a, "timeout -s KILL 5 bash -c ':(){ :|:& };:; sleep 10' >/dev/null 2>&1; true", 30_000);
    await new Promise((r) => setTimeout(r, 1_000));
    const during = await a.process.listProcesses({});
    expect(during.processes.length).toBeGreaterThan(0);
    await bomb;
    const alive = await until("echo alive after the fork bomb", async () => {
      const ran = await sh(a, "echo alive");
      return ran.stdout === "alive\n" ? ran : undefined;
    });
    expect(alive.code).toBe(0);
    // The host's own processes still start.
    const { processes } = await b.process.listProcesses({});
    expect(processes.length).toBeGreaterThan(0);

    await ok(a, "echo kept > /home/user/workspace/after-bomb.txt");
    const stopped = await repls.stopRepl({ replId: a.id });
    expect(stopped.repl?.state).toBe(ReplState.STOPPED);
    const { snapshots } = await repls.listSnapshots({ replId: a.id });
    expect(snapshots.length).toBeGreaterThan(0);
    // Nothing of A's uid is left on the host (its outermost process, core's child, is reaped within moments).
    await until("no process of A's uid on the host", async () =>
      (await hostProcesses()).some((p) => p.uid === a.uid) ? undefined : true,
    );
  }, 90_000);

  it("7. a memory hog is killed at the limit, the runner answers, and the workspace is saved and restored", async () => {
    await ok(b, "echo written-before-the-hog > /home/user/workspace/before.txt");
    // Control: well under the limit is fine.
    await ok(b, "python3 -c 'b=b\"x\"*(32*1024*1024)'");
    const hog = await sh(b, "exec python3 -c 'b=b\"x\"*(256*1024*1024); print(len(b))'", 60_000);
    expect(hog.timedOut).toBe(false);
    expect(hog.stdout).not.toContain(String(256 * 1024 * 1024));
    expect(hog.code === undefined ? hog.signal : hog.code).not.toBe(0);
    expect(await ok(b, "echo alive")).toBe("alive\n");

    const stopped = await repls.stopRepl({ replId: b.id });
    expect(stopped.repl?.state).toBe(ReplState.STOPPED);
    const started = await repls.startRepl({ replId: b.id });
    expect(started.repl?.state).toBe(ReplState.RUNNING);
    expect(await ok(b, "cat /home/user/workspace/before.txt")).toBe("written-before-the-hog\n");
  }, 90_000);
});
