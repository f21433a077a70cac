import { type ChildProcess, execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";

/** The repository root, for tests that start the real entry points. */
export const repoRoot = join(import.meta.dirname, "..", "..", "..", "..");

/** A service started as its own process. */
export interface SpawnedService {
  url: string;
  port: number;
  child: ChildProcess;
  /** The log record that said the service is ready (its `msg` was the awaited one). */
  ready: Record<string, unknown>;
  /** Every line the process wrote to stdout and stderr so far. */
  output: string[];
  /** Sends SIGTERM and resolves with the exit code once the process has exited. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts a service entry point on a free port with the given extra arguments, and
 * resolves once it logs that it listens. A TypeScript entry (`runner/src/main.ts`) runs
 * through tsx; a built one (`runner/dist/main.js`, from `npm run build`) on plain Node
 * with `nodeOptions`. It is ready when it logs a record whose `msg` is `readyMessage`
 * (default `listening`) with a `port`.
 */
export async function spawnService(
  entry: string,
  args: string[] = [],
  env: Record<string, string> = {},
  nodeOptions: string[] = [],
  readyMessage = "listening",
): Promise<SpawnedService> {
  const loader = entry.endsWith(".ts") ? ["--import", "tsx"] : [];
  const child = spawn(process.execPath, [...nodeOptions, ...loader, join(repoRoot, entry), "--port", "0", ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let ready: Record<string, unknown> = {};
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${entry} did not start:\n${output.join("\n")}`)), 30_000);
    const onLine = (line: string) => {
      output.push(line);
      if (!line.startsWith("{")) return;
      try {
        const record = JSON.parse(line) as { msg?: string; port?: number };
        if (record.msg === readyMessage && record.port) {
          clearTimeout(timer);
          ready = record;
          resolve(record.port);
        }
      } catch {
        // not a log record
      }
    };
    if (child.stdout) createInterface({ input: child.stdout }).on("line", onLine);
    if (child.stderr) createInterface({ input: child.stderr }).on("line", onLine);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${entry} exited with ${code} before listening:\n${output.join("\n")}`));
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    ready,
    child,
    output,
    stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

const execFileAsync = promisify(execFile);
const bufBinary = join(repoRoot, "node_modules", ".bin", "buf");

/**
 * Runs `buf curl` with the given arguments and, for `-d @-`, `input` on its standard
 * input; resolves with its output whatever its exit status.
 */
export async function bufCurl(
  args: string[],
  input?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const running = execFileAsync(bufBinary, ["curl", ...args], { timeout: 30_000 });
    running.child.stdin?.end(input ?? "");
    const { stdout, stderr } = await running;
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : 1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}
