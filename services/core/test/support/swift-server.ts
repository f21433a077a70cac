import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { freePort } from "@devex/kit/testing";

const execFileAsync = promisify(execFile);

/**
 * An OpenStack Swift of a test's own with the S3 API (s3api + tempauth), from Debian's
 * packages (swift, swift-proxy, swift-account, swift-container, swift-object, memcached):
 * single-replica rings with one device on 127.0.0.1, everything in a temporary folder,
 * free ports. A real object store, not a stand-in.
 */
export interface SwiftServer {
  /** The S3 endpoint (path-style). */
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Everything the servers logged. */
  output: string[];
  /** Stops the proxy: the store is down (connections refused) until {@link SwiftServer.up}. */
  down(): Promise<void>;
  /** Starts the proxy again after {@link SwiftServer.down}. */
  up(): Promise<void>;
  /** Freezes the proxy (SIGSTOP): calls hang, as with a store that times out, until {@link SwiftServer.resume}. */
  freeze(): void;
  resume(): void;
  /** Stops every server and removes the folder; safe to call twice. */
  stop(): Promise<void>;
}

const servers = ["account", "container", "object"] as const;
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Starts Swift with s3api and resolves once the whole cluster serves: the proxy answers
 * `/healthcheck` and a container and an object can be written and removed through it (the
 * proxy comes up before the account, container and object servers do, and answers 503
 * until they have).
 */
export async function startSwiftServer(): Promise<SwiftServer> {
  const dir = await mkdtemp(join(tmpdir(), "devex-swift-"));
  const devices = join(dir, "srv");
  await mkdir(join(devices, "sdb1"), { recursive: true });
  const [proxyPort, memcachedPort, ...serverPorts] = await Promise.all([1, 2, 3, 4, 5].map(() => freePort()));
  const output: string[] = [];
  const children = new Map<string, ChildProcess>();

  for (const [index, name] of servers.entries()) {
    const builder = join(dir, `${name}.builder`);
    await execFileAsync("swift-ring-builder", [builder, "create", "10", "1", "1"]);
    await execFileAsync("swift-ring-builder", [builder, "add", `r1z1-127.0.0.1:${serverPorts[index]}/sdb1`, "100"]);
    await execFileAsync("swift-ring-builder", [builder, "rebalance"]);
    await writeFile(
      join(dir, `${name}-server.conf`),
      [
        "[DEFAULT]",
        "bind_ip = 127.0.0.1",
        `bind_port = ${serverPorts[index]}`,
        "workers = 0",
        `devices = ${devices}`,
        "mount_check = false",
        `swift_dir = ${dir}`,
        "log_level = WARNING",
        "[pipeline:main]",
        `pipeline = ${name}-server`,
        `[app:${name}-server]`,
        `use = egg:swift#${name}`,
        `[${name}-replicator]`,
        `[${name}-auditor]`,
        "",
      ].join("\n"),
    );
  }
  await writeFile(
    join(dir, "proxy-server.conf"),
    [
      "[DEFAULT]",
      "bind_ip = 127.0.0.1",
      `bind_port = ${proxyPort}`,
      "workers = 0",
      `swift_dir = ${dir}`,
      "log_level = WARNING",
      "[pipeline:main]",
      "pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server",
      "[app:proxy-server]",
      "use = egg:swift#proxy",
      "account_autocreate = true",
      "[filter:tempauth]",
      "use = egg:swift#tempauth",
      "user_test_tester = testing .admin",
      "[filter:s3api]",
      "use = egg:swift#s3api",
      "location = us-east-1",
      "[filter:cache]",
      "use = egg:swift#memcache",
      `memcache_servers = 127.0.0.1:${memcachedPort}`,
      ...[
        "catch_errors",
        "gatekeeper",
        "healthcheck",
        "proxy_logging",
        "listing_formats",
        "copy",
        "slo",
        "dlo",
      ].flatMap((filter) => [`[filter:${filter.replace("_logging", "-logging")}]`, `use = egg:swift#${filter}`]),
      "",
    ].join("\n"),
  );

  const launch = (name: string, command: string, args: string[]) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    running.add(child);
    children.set(name, child);
    const record = (data: Buffer) => output.push(`${name}: ${data.toString().trimEnd()}`);
    child.stdout?.on("data", record);
    child.stderr?.on("data", record);
    child.once("exit", () => running.delete(child));
    return child;
  };
  const startProxy = async () => {
    launch("proxy", "swift-proxy-server", [join(dir, "proxy-server.conf")]);
    await waitForHealth(`http://127.0.0.1:${proxyPort}/healthcheck`, output);
  };
  const stopChild = async (name: string) => {
    const child = children.get(name);
    children.delete(name);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGCONT");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
    await exited;
    clearTimeout(timer);
  };

  launch("memcached", "memcached", [
    "-u",
    "root",
    "-l",
    "127.0.0.1",
    "-p",
    String(memcachedPort),
    "-U",
    "0",
    "-m",
    "16",
  ]);
  for (const name of servers) launch(name, `swift-${name}-server`, [join(dir, `${name}-server.conf`)]);
  try {
    await startProxy();
    await waitForStorage(`http://127.0.0.1:${proxyPort}`, output);
  } catch (error) {
    await Promise.all([...children.keys()].map(stopChild));
    await rm(dir, { recursive: true, force: true });
    throw error;
  }

  let stopped = false;
  return {
    endpoint: `http://127.0.0.1:${proxyPort}`,
    region: "us-east-1",
    accessKeyId: "test:tester",
    secretAccessKey: "testing",
    output,
    down: () => stopChild("proxy"),
    up: startProxy,
    freeze: () => children.get("proxy")?.kill("SIGSTOP"),
    resume: () => children.get("proxy")?.kill("SIGCONT"),
    async stop() {
      if (stopped) return;
      stopped = true;
      await Promise.all([...children.keys()].map(stopChild));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function waitForHealth(url: string, output: string[]): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await sleep(50);
  }
  throw new Error(`Swift did not start:\n${output.join("\n")}`);
}

/** Writes and removes a probe container and object through the Swift API until that works. */
async function waitForStorage(endpoint: string, output: string[]): Promise<void> {
  const deadline = Date.now() + 30_000;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const auth = await fetch(`${endpoint}/auth/v1.0`, {
        headers: { "x-storage-user": "test:tester", "x-storage-pass": "testing" },
        signal: AbortSignal.timeout(2_000),
      });
      const token = auth.headers.get("x-auth-token");
      const storage = auth.headers.get("x-storage-url");
      if (!auth.ok || !token || !storage) throw new Error(`auth answered ${auth.status}`);
      const call = async (method: string, path: string) => {
        const res = await fetch(`${storage}/${path}`, {
          method,
          headers: { "x-auth-token": token },
          body: method === "PUT" && path.includes("/") ? "probe" : undefined,
          signal: AbortSignal.timeout(2_000),
        });
        await res.arrayBuffer();
        if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}`);
      };
      await call("PUT", "devex-probe");
      await call("PUT", "devex-probe/object");
      await call("DELETE", "devex-probe/object");
      await call("DELETE", "devex-probe");
      return;
    } catch (error) {
      last = error instanceof Error ? error.message : String(error);
    }
    await sleep(100);
  }
  throw new Error(`Swift's storage servers did not come up (${last}):\n${output.join("\n")}`);
}
