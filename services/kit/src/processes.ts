/**
 * Whether a process with this pid exists (signal 0 probes without sending). One that
 * exists but belongs to another user (EPERM) counts as existing.
 */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
