import { readFile } from "node:fs/promises";

/**
 * When a process started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or
 * undefined when no such process exists. A pid and its start time name one process for good:
 * a pid the kernel reused for another process has another start time.
 */
export async function startTicksOf(pid: number): Promise<number | undefined> {
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
