/**
 * `npm start`: runs the whole system on one machine with its embedded defaults, and
 * stops all of it on Ctrl-C.
 *
 * Today that is core on port 8080 (DEVEX_CORE_PORT) and one standalone runner in
 * development mode on port 8081 (DEVEX_RUNNER_PORT) serving `.devex/runner/workspace`,
 * each its own process (the bundles `npm run build` makes), logging to this terminal.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";

const root = join(import.meta.dirname, "..", "..");
const corePort = process.env.DEVEX_CORE_PORT ?? "8080";
const runnerPort = process.env.DEVEX_RUNNER_PORT ?? "8081";

function launch(name: string, entry: string, args: string[]): ChildProcess {
  const child = spawn(process.execPath, ["--max-semi-space-size=1", join(root, entry), ...args], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
    env: process.env,
  });
  child.on("exit", (code, signal) => {
    if (!stopping) {
      console.error(`${name} exited unexpectedly (${signal ?? `code ${code}`}); stopping everything`);
      stop(1);
    }
  });
  return child;
}

let stopping = false;
const children = [
  launch("core", "services/core/dist/main.js", ["--port", corePort]),
  launch("runner", "runner/dist/main.js", ["--port", runnerPort, "--dev"]),
];

function stop(status: number): void {
  if (stopping) return;
  stopping = true;
  let left = children.length;
  for (const child of children) {
    if (child.exitCode !== null || child.signalCode !== null) {
      if (--left === 0) process.exit(status);
      continue;
    }
    child.once("exit", () => {
      if (--left === 0) process.exit(status);
    });
    child.kill("SIGTERM");
  }
}

process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));

console.log(`
Devex is starting.
  core    http://127.0.0.1:${corePort}
  runner  http://127.0.0.1:${runnerPort}

The runner prints the tokens it accepts below (development mode).

List every RPC:
  npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://127.0.0.1:${corePort}
Check health:
  npx buf curl --protocol grpc --http2-prior-knowledge http://127.0.0.1:${corePort}/grpc.health.v1.Health/Check

Press Ctrl-C to stop everything.
`);
