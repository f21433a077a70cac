import { lstat, readdir, rmdir, unlink } from "node:fs/promises";
import { errnoOf } from "./errors.js";
import { Directory } from "./resolver.js";

/**
 * Removes `name` in `parent` and everything below it; returns how many entries went.
 *
 * It never follows a symlink: each directory is opened with O_NOFOLLOW through its parent's
 * descriptor and emptied through its own, so a directory swapped for a symlink to somewhere
 * else while the tree is being removed is unlinked as a link (the classic `rm -r` race that
 * deletes outside files cannot happen). Entries that vanish meanwhile are not counted.
 */
export async function removeTree(parent: Directory, name: string): Promise<number> {
  let dir: Directory;
  try {
    dir = await Directory.open(parent.entry(name));
  } catch (error) {
    const code = errnoOf(error);
    if (code === "ENOENT") return 0;
    if (code !== "ELOOP" && code !== "ENOTDIR") throw error;
    // Not a directory (any more): remove the entry itself.
    return removeEntry(parent, name);
  }
  let removed = 0;
  try {
    for (const child of await readdir(dir.self)) {
      const stats = await lstat(dir.entry(child)).catch(ignoreMissing);
      if (!stats) continue;
      removed += stats.isDirectory() ? await removeTree(dir, child) : await removeEntry(dir, child);
    }
  } finally {
    await dir.close();
  }
  try {
    await rmdir(parent.entry(name));
    return removed + 1;
  } catch (error) {
    if (errnoOf(error) === "ENOENT") return removed;
    throw error;
  }
}

async function removeEntry(dir: Directory, name: string): Promise<number> {
  try {
    await unlink(dir.entry(name));
    return 1;
  } catch (error) {
    if (errnoOf(error) === "ENOENT") return 0;
    throw error;
  }
}

function ignoreMissing(error: unknown): undefined {
  if (errnoOf(error) === "ENOENT") return undefined;
  throw error;
}
