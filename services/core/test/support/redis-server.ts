import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "@devex/kit/testing";

const redisServerBinary = "/usr/bin/redis-server";

/** A redis-server of a test's own, on a free port, with its data in a temporary folder. */
export interface RedisServer {
  url: string;
  port: number;
  /** Where its append-only file lives. */
  dir: string;
  /** Everything it logged, across restarts. */
  output: string[];
  /** Stops it for good (SIGKILL if SIGTERM is not enough) and removes its folder; safe to call twice. */
  stop(): Promise<void>;
  /**
   * Stops it with SIGTERM, waits for its exit, runs `whileDown`, and starts it again on the same
   * port and folder; the data comes back from the append-only file.
   */
  restart(whileDown?: () => Promise<void>): Promise<void>;
}

/** Options for {@link startRedisServer}. */
export interface RedisServerOptions {
  /**
   * Whether it persists its data (an append-only file fsynced on every write). Default true;
   * false starts a Redis that keeps everything in memory only, as core refuses by default.
   */
  persistence?: boolean;
  /** More redis-server arguments (`--rename-command CONFIG ""`, say). */
  args?: string[];
}

/** Every server still running, killed when the test process exits however it exits. */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Starts a redis-server (never the system one on 6379) with every write fsynced to an
 * append-only file (unless told otherwise), and resolves once it answers PING.
 */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), "devex-redis-"));
  const port = await freePort();
  const output: string[] = [];
  const args = [
    ...(options.persistence === false ? ["--appendonly", "no"] : ["--appendonly", "yes", "--appendfsync", "always"]),
    ...(options.args ?? []),
  ];
  let child: ChildProcess | undefined = await launch(port, dir, args, output);
  const stopProcess = async (signal: NodeJS.Signals) => {
    const current = child;
    child = undefined;
    if (!current) return;
    const exited = new Promise<void>((resolve) => {
      if (current.exitCode !== null || current.signalCode !== null) resolve();
      else current.once("exit", () => resolve());
    });
    current.kill(signal);
    const killer = setTimeout(() => current.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(killer);
    running.delete(current);
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    output,
    async stop() {
      await stopProcess("SIGTERM");
      await rm(dir, { recursive: true, force: true });
    },
    async restart(whileDown) {
      await stopProcess("SIGTERM");
      await whileDown?.();
      child = await launch(port, dir, args, output);
    },
  };
}

async function launch(port: number, dir: string, args: string[], output: string[]): Promise<ChildProcess> {
  const child = spawn(
    redisServerBinary,
    ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--daemonize", "no", ...args],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  running.add(child);
  child.once("exit", () => running.delete(child));
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding("utf8");
    stream?.on("data", (chunk: string) => output.push(...chunk.split("\n").filter(Boolean)));
  }
  const deadline = Date.now() + 10_000;
  while (!(await answersPing(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`redis-server on port ${port} did not start:\n${output.join("\n")}`);
    }
    await sleep(20);
  }
  return child;
}

/** Sends an inline PING over a fresh socket; true on `+PONG`. */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    let reply = "";
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (data) => {
      reply += data.toString("latin1");
      if (reply.includes("\r\n")) done(reply.startsWith("+PONG"));
    });
  });
}
