import { realpath, stat } from "node:fs/promises";
import { dirname, relative, resolve, sep } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { isSameOrBelow } from "./filesystem/paths.js";

/** The working directory of a program the runner starts, checked to lie inside the workspace. */
export interface WorkingDirectory {
  /** The real path (symlinks resolved) the process is started in. */
  absolute: string;
  /** The same, relative to the workspace root with "/" separators; "." for the root. */
  relative: string;
}

/**
 * Resolves a requested working directory (relative to the workspace root, or absolute inside
 * it; empty for the root) after following symlinks. A path that leaves the workspace, lexically
 * or through a symlink, fails with PERMISSION_DENIED; a missing one with NOT_FOUND; a file with
 * FAILED_PRECONDITION. The process is started in the returned real path, so a symlink changed
 * after this check cannot move it elsewhere.
 */
export async function resolveWorkingDirectory(
  workspace: string,
  requested: string,
  field = "config.cwd",
): Promise<WorkingDirectory> {
  const escapes = () => new ConnectError(`${field} "${requested}" is outside the workspace`, Code.PermissionDenied);
  const lexical = resolve(workspace, requested || ".");
  if (!isSameOrBelow(lexical, workspace)) throw escapes();
  let real: string;
  try {
    real = await realpath(lexical);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "ENOTDIR") {
      throw new ConnectError(
        `${field} "${requested}" cannot be resolved: ${code}`,
        Code.PermissionDenied,
        undefined,
        undefined,
        error,
      );
    }
    // Tell "missing" only about places inside the workspace: a missing path behind a symlink
    // that points out of it must not reveal what exists outside.
    if (!isSameOrBelow(await deepestExisting(lexical), workspace)) throw escapes();
    throw new ConnectError(`${field} "${requested}" does not exist`, Code.NotFound, undefined, undefined, error);
  }
  if (!isSameOrBelow(real, workspace)) throw escapes();
  if (!(await stat(real)).isDirectory()) {
    throw new ConnectError(`${field} "${requested}" is not a directory`, Code.FailedPrecondition);
  }
  const inside = relative(workspace, real);
  return { absolute: real, relative: inside === "" ? "." : inside.split(sep).join("/") };
}

/** The real path of the nearest ancestor of `path` that exists. */
async function deepestExisting(path: string): Promise<string> {
  for (let current = dirname(path); ; current = dirname(current)) {
    try {
      return await realpath(current);
    } catch {
      if (dirname(current) === current) return current;
    }
  }
}
