import { readFile } from "node:fs/promises";

/**
 * One process on this machine for good: its pid and the kernel's start time of that pid, so a
 * pid the kernel reused for another process never passes for it. Records name the core process
 * that wrote them this way (a runner's launcher, a replica's lease), so that a core that died is
 * known at once, not when a timeout runs out.
 */
export interface ProcessIdentity {
  pid: number;
  /** Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot. */
  startTicks: number;
}

/**
 * When a process started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or
 * undefined when no such process exists.
 */
async function startTicksOf(pid: number): Promise<number | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count from the last ")".
  const ticks = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
  return Number.isFinite(ticks) ? ticks : undefined;
}

let current: Promise<ProcessIdentity> | undefined;

/** This process's identity. */
export function currentProcess(): Promise<ProcessIdentity> {
  current ??= startTicksOf(process.pid).then((startTicks) => ({ pid: process.pid, startTicks: startTicks ?? 0 }));
  return current;
}

/** Whether the process still runs: its pid exists and started when the identity says. */
export async function processAlive(identity: ProcessIdentity): Promise<boolean> {
  return (await startTicksOf(identity.pid)) === identity.startTicks;
}

/** Whether `value` is a process identity as records hold it. */
export function isProcessIdentity(value: unknown): value is ProcessIdentity {
  const identity = value as Partial<ProcessIdentity> | undefined;
  return (
    typeof identity === "object" &&
    identity !== null &&
    Number.isInteger(identity.pid) &&
    Number.isInteger(identity.startTicks)
  );
}
