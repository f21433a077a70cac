import { type BigIntStats, constants } from "node:fs";
import { copyFile, lstat, mkdir, open, readdir, readlink, rename, symlink, unlink } from "node:fs/promises";
import { Code } from "@connectrpc/connect";
import { temporaryName } from "./atomic-write.js";
import { errnoOf, pathError } from "./errors.js";
import { joinRelative } from "./paths.js";
import { removeTree } from "./remove.js";
import { chmodDirectory, Directory } from "./resolver.js";

/** What a copy did. */
export interface CopyTally {
  /** Files and symlinks copied. */
  files: number;
  /** Content bytes copied. */
  bytes: number;
}

const sourceFlags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/**
 * Copies the entry `srcName` of `src` to `dstName` in `dst`.
 *
 * Nothing is followed: a symlink is copied as a symlink with the same target text (so a
 * link that points outside the workspace is copied as such a link, and reading through it
 * is refused as before; no outside content is ever copied in), a file is opened with
 * O_NOFOLLOW and checked with fstat before its bytes are copied (by the kernel:
 * copy_file_range or a reflink), and directories are opened with O_NOFOLLOW through their
 * parent's descriptor. Permission bits are kept. FIFOs, sockets and devices are skipped.
 *
 * Each file or symlink is created under a temporary name and renamed into place, so a
 * replaced file is never half-written. A directory that did not exist is assembled under a
 * temporary name and renamed into place at the end, so it appears whole or not at all; with
 * `merge`, an existing directory is filled in place, replacing files that exist in both.
 * `rel` names the destination in error messages.
 */
export async function copyEntry(
  src: Directory,
  srcName: string,
  dst: Directory,
  dstName: string,
  rel: string,
  merge: boolean,
  tally: CopyTally,
): Promise<void> {
  const stats = await lstat(src.entry(srcName), { bigint: true });
  if (!stats.isDirectory()) {
    await copyLeaf(src, srcName, stats, dst, dstName, tally);
    return;
  }
  const existing = await lstat(dst.entry(dstName)).catch(ignoreMissing);
  if (existing && !existing.isDirectory()) {
    throw pathError(Code.FailedPrecondition, rel, "is not a directory; a directory cannot replace it");
  }
  if (existing && merge) {
    await copyChildren(src, srcName, dst, dstName, rel, tally);
    return;
  }
  const tempName = temporaryName("copy");
  await mkdir(dst.entry(tempName), 0o700);
  try {
    await copyChildren(src, srcName, dst, tempName, rel, tally);
    await chmodDirectory(dst.entry(tempName), Number(stats.mode & 0o7777n));
    await rename(dst.entry(tempName), dst.entry(dstName));
  } catch (error) {
    await removeTree(dst, tempName).catch(() => {});
    if (["EEXIST", "ENOTEMPTY"].includes(errnoOf(error) ?? "")) {
      throw pathError(Code.AlreadyExists, rel, "appeared while the copy was being made", error);
    }
    throw error;
  }
}

async function copyChildren(
  src: Directory,
  srcName: string,
  dst: Directory,
  dstName: string,
  rel: string,
  tally: CopyTally,
): Promise<void> {
  const from = await Directory.open(src.entry(srcName));
  try {
    const to = await Directory.open(dst.entry(dstName));
    try {
      for (const name of await readdir(from.self)) {
        const stats = await lstat(from.entry(name)).catch(ignoreMissing);
        if (!stats) continue;
        await copyEntry(from, name, to, name, joinRelative(rel, name), true, tally);
      }
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}

async function copyLeaf(
  src: Directory,
  name: string,
  stats: BigIntStats,
  dst: Directory,
  dstName: string,
  tally: CopyTally,
): Promise<void> {
  const tempName = temporaryName("copy");
  const temp = dst.entry(tempName);
  if (stats.isSymbolicLink()) {
    await symlink(await readlink(src.entry(name)), temp);
  } else if (stats.isFile()) {
    const handle = await open(src.entry(name), sourceFlags);
    try {
      const opened = await handle.stat({ bigint: true });
      if (!opened.isFile()) return;
      // Through the descriptor: the bytes come from the file that was checked. COPYFILE_EXCL
      // creates the copy with O_EXCL (never through a symlink) and libuv gives it the source's
      // mode through its descriptor.
      await copyFile(`/proc/self/fd/${handle.fd}`, temp, constants.COPYFILE_EXCL);
      tally.bytes += Number(opened.size);
    } finally {
      await handle.close();
    }
  } else {
    return;
  }
  try {
    await rename(temp, dst.entry(dstName));
  } catch (error) {
    await unlink(temp).catch(() => {});
    throw error;
  }
  tally.files++;
}

function ignoreMissing(error: unknown): undefined {
  if (errnoOf(error) === "ENOENT") return undefined;
  throw error;
}
