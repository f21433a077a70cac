import { Code, ConnectError } from "@connectrpc/connect";
import type { ReplStateName } from "../model.js";

/**
 * The allowed lifecycle transitions of a repl (repl.proto, `ReplState`):
 * created, stopped or failed → starting → running → stopping → stopped; stopping → running
 * when the save fails; starting or running → failed when the runner cannot start or dies;
 * starting → stopping only for an operator's force stop that aborts a start; any state but
 * deleting → deleting. Nothing leaves deleting: the record disappears.
 */
export const replTransitions: Readonly<Record<ReplStateName, readonly ReplStateName[]>> = {
  created: ["starting", "deleting"],
  starting: ["running", "failed", "stopping", "deleting"],
  running: ["stopping", "failed", "deleting"],
  stopping: ["stopped", "running", "deleting"],
  stopped: ["starting", "deleting"],
  failed: ["starting", "deleting"],
  deleting: [],
};

/** States in which a repl may hold a runner (counted as running by usage figures). */
export const runnerStates: ReadonlySet<ReplStateName> = new Set(["starting", "running", "stopping"]);

/** States whose work is done by one worker at a time; the reconciler retries them when stuck. */
export const transitionalStates: ReadonlySet<ReplStateName> = new Set(["starting", "stopping", "deleting"]);

/**
 * Whether a repl may go from `from` to `to`. Staying in the same state is not a transition
 * (a settings change, or a worker taking over a stuck transition) and is allowed.
 */
export function canTransition(from: ReplStateName, to: ReplStateName): boolean {
  return from === to || replTransitions[from].includes(to);
}

/** Throws FailedPrecondition naming both states when {@link canTransition} refuses the move. */
export function assertTransition(from: ReplStateName, to: ReplStateName): void {
  if (!canTransition(from, to)) {
    throw new ConnectError(`a ${from} repl cannot become ${to}`, Code.FailedPrecondition);
  }
}
