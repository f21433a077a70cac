import { Code, ConnectError } from "@connectrpc/connect";
import { quotePath } from "./paths.js";

/** The errno code of a Node filesystem error ("ENOENT", ...), if it is one. */
export function errnoOf(error: unknown): string | undefined {
  if (typeof error === "object" && error !== null && "code" in error && typeof error.code === "string") {
    return error.code;
  }
  return undefined;
}

const byErrno: Record<string, [Code, string]> = {
  ENOENT: [Code.NotFound, "does not exist"],
  EACCES: [Code.PermissionDenied, "is not accessible to the workspace user"],
  EPERM: [Code.PermissionDenied, "may not be changed by the workspace user"],
  EEXIST: [Code.AlreadyExists, "already exists"],
  ENOTEMPTY: [Code.FailedPrecondition, "is a directory that is not empty"],
  ENOTDIR: [Code.FailedPrecondition, "is not a directory (or has a file where a directory is needed)"],
  EISDIR: [Code.FailedPrecondition, "is a directory"],
  ELOOP: [Code.FailedPrecondition, "has too many levels of symbolic links"],
  EINVAL: [Code.FailedPrecondition, "cannot be used this way (a directory into itself?)"],
  EXDEV: [Code.FailedPrecondition, "is on another filesystem"],
  EBUSY: [Code.FailedPrecondition, "is busy (a mount point?)"],
  EROFS: [Code.FailedPrecondition, "is on a read-only filesystem"],
  ETXTBSY: [Code.FailedPrecondition, "is a running program"],
  ENAMETOOLONG: [Code.InvalidArgument, "is too long"],
  ENOSPC: [Code.ResourceExhausted, "cannot be written: the disk is full"],
  EDQUOT: [Code.ResourceExhausted, "cannot be written: the disk quota is exhausted"],
  EMFILE: [Code.ResourceExhausted, "cannot be opened: too many open files"],
  ENFILE: [Code.ResourceExhausted, "cannot be opened: too many open files"],
  EFBIG: [Code.ResourceExhausted, "would be larger than the filesystem allows"],
};

/**
 * Turns an error from a filesystem call into a ConnectError that names the path (as the
 * client spelled it) and what is wrong, keeping the original as the cause. ConnectErrors
 * pass through unchanged, so handlers can map everything that reaches them.
 */
export function toConnectError(error: unknown, path: string): ConnectError {
  if (error instanceof ConnectError) return error;
  const known = byErrno[errnoOf(error) ?? ""];
  if (known) return new ConnectError(`${quotePath(path)} ${known[1]}`, known[0], undefined, undefined, error);
  return new ConnectError(
    `${quotePath(path)}: ${error instanceof Error ? error.message : String(error)}`,
    Code.Internal,
    undefined,
    undefined,
    error,
  );
}

/** A ConnectError about a path: `"<path>" <problem>`. */
export function pathError(code: Code, path: string, problem: string, cause?: unknown): ConnectError {
  return new ConnectError(`${quotePath(path)} ${problem}`, code, undefined, undefined, cause);
}
