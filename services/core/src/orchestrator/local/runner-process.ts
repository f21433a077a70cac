import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Logger } from "pino";
import type { Sandbox } from "./sandbox/index.js";

/** How a runner process is started, the same for every sandbox. */
export interface RunnerLaunchOptions {
  /** The runner bundle (`runner/dist/main.js`). */
  runnerEntry: string;
  /** Node flags. */
  nodeOptions: string[];
  /** Core's public key (SPKI PEM), which the runner checks tokens with; the only key it gets. */
  tokenPublicKeyPem: string;
  /** The runner's log level. */
  logLevel: string;
  /** Environment of the runner itself (locale...; the sandbox sets HOME, TMPDIR and the like), never core's configuration or secrets. */
  env: Record<string, string>;
  /** With `--sandbox-network allowlist`: the runner forwards programs' proxy traffic to this socket in its run dir. */
  egress?: boolean;
}

/** A runner process in its sandbox, as seen from core. */
export interface RunnerProcess {
  child: ChildProcess;
  /** The host pid of the sandbox's outermost process. */
  pid: number;
  /** Its last output lines, for errors. */
  tail: string[];
  /** Resolves with the first log record whose message is `msg`; rejects when the process exits first. */
  waitFor(msg: string): Promise<Record<string, unknown>>;
  /** Resolves once the process has exited, with why (and its last output lines are read). */
  exited: Promise<string>;
  /** Where its output goes from now on (a standby's log becomes its repl's). */
  relayTo(logger: Logger): void;
}

/** Fields of every runner log line that core's own logger sets itself. */
const pinoBaseKeys = new Set(["time", "pid", "hostname", "name", "service"]);
const tailLines = 40;

/** The socket names in a sandbox's run dir. */
export const runnerSocketName = "runner.sock";
export const previewSocketName = "preview.sock";
export const egressSocketName = "egress.sock";

/**
 * Starts `runner/dist/main.js` inside `sandbox`, listening on a Unix socket in the sandbox's
 * run dir (never on a port: the sandbox has no network the host can reach), with its
 * workspace and home at the sandbox's inner paths and every program it starts entering the
 * sandbox's user cgroup. `flags` add `--repl-id` or `--standby --standby-id`.
 */
export function launchRunner(
  sandbox: Sandbox,
  flags: string[],
  options: RunnerLaunchOptions,
  logger: Logger,
): RunnerProcess {
  const inner = sandbox.innerDirs;
  const args = [
    ...options.nodeOptions,
    options.runnerEntry,
    "--socket",
    join(inner.run, runnerSocketName),
    "--preview-socket",
    join(inner.run, previewSocketName),
    "--workspace",
    inner.workspace,
    "--home",
    inner.home,
    ...(sandbox.userCgroupDirs.length > 0 ? ["--process-cgroups", sandbox.userCgroupDirs.join(",")] : []),
    ...(options.egress ? ["--egress-socket", join(inner.run, egressSocketName)] : []),
    ...flags,
    `--token-public-key=${options.tokenPublicKeyPem}`,
    "--log-level",
    options.logLevel,
  ];
  const child = sandbox.spawn([process.execPath, ...args], {
    env: options.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = logger;
  const tail: string[] = [];
  const waiters = new Map<string, Array<(record: Record<string, unknown>) => void>>();
  const onLine = (stream: "stdout" | "stderr", line: string) => {
    tail.push(line);
    if (tail.length > tailLines) tail.shift();
    const record = relayLine(log, stream, line);
    const msg = record?.msg;
    if (record && typeof msg === "string") {
      for (const resolve of waiters.get(msg) ?? []) resolve(record);
      waiters.delete(msg);
    }
  };
  if (child.stdout) createInterface({ input: child.stdout }).on("line", (line) => onLine("stdout", line));
  if (child.stderr) createInterface({ input: child.stderr }).on("line", (line) => onLine("stderr", line));

  const exited = new Promise<string>((resolve) => {
    child.once("error", (error) => resolve(`the runner could not be started: ${error.message}`));
    child.once("exit", (code, signal) => {
      const detail = signal ? `the runner was killed by ${signal}` : `the runner exited with code ${code}`;
      // Its last lines (why it failed) may still be in the pipes: wait for them, briefly, in
      // case a process it left behind holds them open.
      const timer = setTimeout(() => resolve(detail), 250);
      child.once("close", () => {
        clearTimeout(timer);
        resolve(detail);
      });
    });
  });

  return {
    child,
    pid: child.pid ?? 0,
    tail,
    exited,
    relayTo(next) {
      log = next;
    },
    waitFor(msg) {
      return new Promise((resolve, reject) => {
        const list = waiters.get(msg) ?? [];
        list.push(resolve);
        waiters.set(msg, list);
        void exited.then((detail) => reject(new Error(detail)));
      });
    },
  };
}

/** Relays a line of a runner's output to core's log; returns it as a log record if it is one. */
function relayLine(log: Logger, stream: "stdout" | "stderr", line: string): Record<string, unknown> | undefined {
  const record = parseLogLine(line);
  if (!record) {
    (stream === "stderr" ? log.warn : log.debug).call(log, { stream }, line.slice(0, 8_192));
    return undefined;
  }
  const { level, msg, ...rest } = record;
  const fields = Object.fromEntries(Object.entries(rest).filter(([key]) => !pinoBaseKeys.has(key)));
  const numeric = typeof level === "number" ? level : 30;
  const method = numeric >= 50 ? log.error : numeric >= 40 ? log.warn : log.debug;
  method.call(log, fields, typeof msg === "string" ? msg : "");
  return { ...fields, msg };
}

function parseLogLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    return value && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
