import { constants } from "node:os";

/**
 * The status a shell would report for a remote exit: the exit code itself, or 128 plus
 * the signal number for a program killed by a signal ("KILL", "SIGKILL" → 137).
 */
export function exitStatusOf(exit: { exitCode: number | null; signal?: string }): number {
  if (exit.exitCode !== null) return exit.exitCode;
  if (exit.signal) {
    const name = (exit.signal.startsWith("SIG") ? exit.signal : `SIG${exit.signal}`).toUpperCase();
    const number = constants.signals[name as keyof typeof constants.signals];
    if (number !== undefined) return 128 + number;
  }
  return 1;
}
