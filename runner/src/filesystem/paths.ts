import { Code, ConnectError } from "@connectrpc/connect";

/** The longest request path accepted, in bytes (Linux's PATH_MAX). */
const maxPathBytes = 4096;

/** The longest single name in a path, in bytes (Linux's NAME_MAX). */
const maxNameBytes = 255;

/**
 * Splits a request path into its components, relative to the workspace root. Nothing is
 * decoded or normalised: "%2e%2e" and "a\\b" are ordinary names, and "." and ".." are left
 * for the resolver, which interprets them against the real directories (a lexical
 * clean-up would let "link/.." mean something other than what the kernel would do).
 *
 * The request validator already refuses empty paths, NUL bytes and paths over 4,096 bytes;
 * the checks are repeated here because every caller (symlink targets, watch events) relies
 * on them. An absolute path is accepted only when it names the workspace or lies below it,
 * spelled with the workspace's real path: "/proc/self/root/..." or a path through a parent's
 * symlink is refused rather than guessed at.
 */
export function splitRequestPath(input: string, workspace: string): string[] {
  if (input.length === 0) throw new ConnectError("the path is empty", Code.InvalidArgument);
  if (input.includes("\0")) throw new ConnectError(`${quotePath(input)} contains a NUL byte`, Code.InvalidArgument);
  if (Buffer.byteLength(input) > maxPathBytes) {
    throw new ConnectError(`${quotePath(input)} is longer than ${maxPathBytes} bytes`, Code.InvalidArgument);
  }
  let relative = input;
  if (input.startsWith("/")) {
    const inside = stripWorkspace(input, workspace);
    if (inside === undefined) {
      throw new ConnectError(`${quotePath(input)} is outside the workspace`, Code.PermissionDenied);
    }
    relative = inside;
  }
  const parts = relative.split("/");
  for (const part of parts) {
    if (Buffer.byteLength(part) > maxNameBytes) {
      throw new ConnectError(
        `${quotePath(input)} has a name longer than ${maxNameBytes} bytes (${quotePath(part)})`,
        Code.InvalidArgument,
      );
    }
  }
  return parts;
}

/**
 * The part of an absolute path below the workspace root ("" for the root itself), or
 * undefined when the path does not start with the root's real path.
 */
export function stripWorkspace(absolute: string, workspace: string): string | undefined {
  if (absolute === workspace) return "";
  const prefix = workspace.endsWith("/") ? workspace : `${workspace}/`;
  return absolute.startsWith(prefix) ? absolute.slice(prefix.length) : undefined;
}

/** Joins a workspace-relative directory path and a name ("." + "a" is "a"). */
export function joinRelative(directory: string, name: string): string {
  if (name === ".") return directory;
  return directory === "." ? name : `${directory}/${name}`;
}

/** Whether `path` is `ancestor` or below it (both absolute and real). */
export function isSameOrBelow(path: string, ancestor: string): boolean {
  return path === ancestor || path.startsWith(ancestor.endsWith("/") ? ancestor : `${ancestor}/`);
}

/**
 * A path quoted for an error message. Long paths are shortened so that a 4 KiB path does
 * not make a 4 KiB message; the message still says which path it was about.
 */
export function quotePath(path: string): string {
  const shown = path.length > 160 ? `${path.slice(0, 80)}…${path.slice(-60)}` : path;
  return JSON.stringify(shown);
}
