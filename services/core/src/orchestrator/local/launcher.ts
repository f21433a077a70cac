import { startTicksOf } from "../../process-start.js";

/**
 * The core process that launched a runner or a standby, as recorded beside it: its pid and
 * the kernel's start time of that pid, so that a reused pid never passes for the core. A
 * record whose launcher is gone belongs to a start nobody will finish (the core died in it);
 * one whose launcher lives may belong to a start in progress in another replica sharing the
 * data directory, and is left to it.
 */
export interface Launcher {
  pid: number;
  /** Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot. */
  startTicks: number;
}

let current: Promise<Launcher> | undefined;

/** This core process as a launcher. */
export function currentLauncher(): Promise<Launcher> {
  current ??= startTicksOf(process.pid).then((startTicks) => ({ pid: process.pid, startTicks: startTicks ?? 0 }));
  return current;
}

/** Whether the launcher still runs: its pid exists and started when the record says. */
export async function launcherAlive(launcher: Launcher): Promise<boolean> {
  return (await startTicksOf(launcher.pid)) === launcher.startTicks;
}

/** Whether `value` is a launcher as records hold it. */
export function isLauncher(value: unknown): value is Launcher {
  const launcher = value as Partial<Launcher> | undefined;
  return (
    typeof launcher === "object" &&
    launcher !== null &&
    Number.isInteger(launcher.pid) &&
    Number.isInteger(launcher.startTicks)
  );
}
