import { access, constants, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Fails with NOT_FOUND unless `file` names an executable: looked up in PATH unless it
 * contains a "/" (then relative to the working directory). For programs whose failed exec
 * would show only as an exit status (in a PTY, or behind the cgroup shim), so the check is
 * made before spawning.
 */
export async function assertExecutable(file: string, cwd: string, path: string): Promise<void> {
  const candidates = file.includes("/")
    ? [resolve(cwd, file)]
    : path
        .split(":")
        .filter(Boolean)
        .map((dir) => resolve(cwd, dir, file));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return;
    } catch {
      // not this one
    }
  }
  throw new ConnectError(`command "${file}" not found or not executable`, Code.NotFound);
}
