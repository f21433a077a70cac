/**
 * Named points where core can be made to crash on purpose, for the fault tests: with
 * `DEVEX_FAILPOINTS=<name>[,<name>...]` in its environment, core kills itself with SIGKILL
 * the first time it reaches one of them, exactly as a crash (or the OOM killer) would at that
 * moment. Without the variable, a failpoint costs one lookup in an empty set.
 */
const armed = new Set(
  (process.env.DEVEX_FAILPOINTS ?? "")
    .split(",")
    .map((name) => name.trim())
    .filter(Boolean),
);

/** The failpoints core has. */
export type FailpointName =
  /** The local orchestrator recorded a start's intent; no sandbox exists yet. */
  | "start-recorded"
  /** The local orchestrator spawned a runner but has not recorded its pid. */
  | "start-spawned"
  /** The local orchestrator handed a standby its repl. */
  | "start-assigned"
  /** A runner is ready and restored; the repl is not recorded running yet. */
  | "start-ready"
  /** A stop drained the runner; its workspace is not saved yet. */
  | "stop-drained"
  /** A stop saved the workspace; the runner is not torn down and the repl not recorded stopped yet. */
  | "stop-saved";

/** Crashes core here if the failpoint is armed. */
export function failpoint(name: FailpointName): void {
  if (!armed.has(name)) return;
  process.stderr.write(`failpoint ${name}: crashing on purpose\n`);
  process.kill(process.pid, "SIGKILL");
}
