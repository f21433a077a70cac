import { randomBytes } from "node:crypto";
import { type BigIntStats, constants } from "node:fs";
import { type FileHandle, link, lstat, open, rename, unlink } from "node:fs/promises";
import { Code } from "@connectrpc/connect";
import { fileVersion } from "./entry.js";
import { errnoOf, pathError, toConnectError } from "./errors.js";
import type { Located } from "./resolver.js";

/** A condition on what is at the target when a write commits (the `condition` oneof of the requests). */
export type WriteCondition =
  | { case: "expectedVersion"; value: string }
  | { case: "mustNotExist"; value: boolean }
  | { case: undefined; value?: undefined };

/** The name of a temporary file next to its target: hidden, unique, and recognisable as ours. */
export function temporaryName(purpose: string): string {
  return `.devex-${purpose}-${randomBytes(8).toString("hex")}.tmp`;
}

/**
 * Fails unless the target may be written under the condition, as it is now: a directory is
 * never replaced; `expected_version` needs the file at that version; `must_not_exist` needs
 * nothing there (not even a dangling symlink). Called before the content is sent, to fail
 * early, and again just before the rename.
 */
export function checkWriteTarget(target: Located, stats: BigIntStats | undefined, condition: WriteCondition): void {
  if (target.isRoot || stats?.isDirectory()) {
    throw pathError(Code.FailedPrecondition, target.display, "is a directory");
  }
  if (target.directoryOnly) {
    throw pathError(Code.FailedPrecondition, target.display, "ends with / but a file is to be written");
  }
  if (condition.case === "mustNotExist" && condition.value && stats) {
    throw pathError(Code.AlreadyExists, target.display, "already exists (must_not_exist is set)");
  }
  if (condition.case === "expectedVersion") {
    if (!stats) throw pathError(Code.NotFound, target.display, "no longer exists (expected_version is set)");
    if (!stats.isFile() || fileVersion(stats) !== condition.value) {
      throw pathError(Code.FailedPrecondition, target.display, "has changed since the expected version was read");
    }
  }
}

/** The outcome of {@link PendingFile.commit}. */
export interface CommitResult {
  /** Whether the target did not exist before. */
  created: boolean;
  /** The new file, as it is at its path. */
  stats: BigIntStats;
}

/**
 * A new version of a file, written to a temporary file in the target's own directory and
 * moved over the target only when complete: readers see the old file or the new one, never
 * a mix, and a write that fails or is cancelled leaves the target untouched.
 */
export class PendingFile {
  private done = false;

  private constructor(
    private readonly target: Located,
    private readonly handle: FileHandle,
    private readonly tempName: string,
    private readonly mode: number,
  ) {}

  /**
   * Creates the temporary file. `mode` 0 means: the existing file's mode, or 0644 less the
   * umask for a new file (which the kernel applies when the file is created with 0644).
   * An explicit mode is created as 0600 and set exactly at commit, so that content meant to
   * be private is never readable by others while it is being written.
   */
  static async create(target: Located, mode: number): Promise<PendingFile> {
    const tempName = temporaryName("write");
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
    try {
      const handle = await open(target.dir.entry(tempName), flags, mode === 0 ? 0o644 : 0o600);
      return new PendingFile(target, handle, tempName, mode);
    } catch (error) {
      throw toConnectError(error, target.display);
    }
  }

  /** Appends bytes; resolves once the kernel has them, so a caller that awaits holds one chunk at a time. */
  async write(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < chunk.byteLength) {
      const { bytesWritten } = await this.handle.write(chunk, offset, chunk.byteLength - offset);
      offset += bytesWritten;
    }
  }

  /** Makes the content written so far durable (fsync). */
  async flush(): Promise<void> {
    await this.handle.sync();
  }

  /**
   * Makes the new content durable (fsync), sets the mode, checks the condition against the
   * target as it is now, and moves the file into place: with rename(2), or for
   * `must_not_exist` with link(2), which fails if anything appeared there meanwhile, so that
   * two creators cannot both win.
   */
  async commit(condition: WriteCondition): Promise<CommitResult> {
    const { target } = this;
    try {
      await this.handle.sync();
      const current = await lstat(target.path, { bigint: true }).catch((error: unknown) => {
        if (errnoOf(error) === "ENOENT") return undefined;
        throw error;
      });
      checkWriteTarget(target, current, condition);
      const mode = this.mode !== 0 ? this.mode : current?.isFile() ? Number(current.mode & 0o7777n) : undefined;
      if (mode !== undefined) await this.handle.chmod(mode);
      await this.handle.close();
      const temp = target.dir.entry(this.tempName);
      if (condition.case === "mustNotExist" && condition.value) {
        await link(temp, target.path).catch((error: unknown) => {
          if (errnoOf(error) === "EEXIST") {
            throw pathError(Code.AlreadyExists, target.display, "already exists (must_not_exist is set)", error);
          }
          throw error;
        });
        await unlink(temp);
      } else {
        await rename(temp, target.path);
      }
      this.done = true;
      await target.dir.sync();
      return { created: current === undefined, stats: await lstat(target.path, { bigint: true }) };
    } catch (error) {
      await this.abort();
      throw toConnectError(error, target.display);
    }
  }

  /** Throws the new content away: closes and removes the temporary file (idempotent). */
  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.handle.close().catch(() => {});
    await unlink(this.target.dir.entry(this.tempName)).catch(() => {});
  }
}

/**
 * Appends `content` to the existing regular file at `target` (WriteFile with `append`): opened
 * without following a symlink, checked to be the very file that was resolved (a file swapped in
 * meanwhile is refused with ABORTED), written, made durable. The condition is checked before,
 * against the file as resolved.
 */
export async function appendToFile(
  target: Located,
  content: Uint8Array,
  condition: WriteCondition,
): Promise<BigIntStats> {
  const stats = target.stats;
  if (!stats) throw pathError(Code.NotFound, target.display, "does not exist (append needs an existing file)");
  checkWriteTarget(target, stats, condition);
  if (!stats.isFile()) throw pathError(Code.FailedPrecondition, target.display, "is not a regular file");
  let handle: FileHandle | undefined;
  try {
    handle = await open(target.path, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW);
    const opened = await handle.stat({ bigint: true });
    if (opened.ino !== stats.ino || opened.dev !== stats.dev) {
      throw pathError(Code.Aborted, target.display, "was replaced while it was being appended to");
    }
    let offset = 0;
    while (offset < content.byteLength) {
      const { bytesWritten } = await handle.write(content, offset, content.byteLength - offset);
      offset += bytesWritten;
    }
    await handle.sync();
    return await handle.stat({ bigint: true });
  } catch (error) {
    throw toConnectError(error, target.display);
  } finally {
    await handle?.close();
  }
}
