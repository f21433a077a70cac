/**
 * `npm start`: the whole system on one machine with its embedded defaults: core (port 8080,
 * DEVEX_CORE_PORT) with the embedded state store and local workspaces under `.devex/data`,
 * the repl origin (port 8081, DEVEX_REPL_PORT), the local orchestrator starting one runner
 * process per running repl, the dev login, and a dev admin API key printed at start.
 * Extra arguments go to core (`npm start -- --help` lists them). Ctrl-C stops core, which
 * stops every runner first.
 *
 * CORS stays off unless asked for (`npm start -- --cors-origins http://localhost:5173`). A
 * default of `*` would let every web page the developer visits call this core, whose dev login
 * needs no password; a browser app on the laptop names its own origin instead.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";

const root = join(import.meta.dirname, "..", "..");
const core = spawn(
  process.execPath,
  [
    "--max-semi-space-size=1",
    join(root, "services/core/dist/main.js"),
    "--dev-login",
    "--dev-api-key",
    ...process.argv.slice(2),
  ],
  // Its own process group: a Ctrl-C reaches this launcher only, which passes it on once
  // (core treats a second signal as "exit now", skipping the orderly stop of runners).
  { cwd: root, stdio: "inherit", env: process.env, detached: true },
);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => core.kill(signal));
}
core.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
