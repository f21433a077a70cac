import type { Dirent, Stats } from "node:fs";
import { lstat, readdir, readFile, realpath } from "node:fs/promises";
import { resolve, sep } from "node:path";
import ignore from "ignore";

/** What kind of object a tree entry is; "other" covers sockets, FIFOs and devices. */
export type EntryKind = "file" | "directory" | "symlink" | "other";

/** One entry found by {@link walkTree}. */
export interface TreeEntry {
  /** The path relative to the root, as the raw bytes of the name ("/" separated). */
  path: Buffer;
  kind: EntryKind;
  /** The size of a regular file's contents in bytes (0 for other kinds). */
  size: number;
}

/** Options for {@link walkTree}. */
export interface WalkOptions {
  /**
   * Whether to leave out a path and, for a directory, everything below it. It gets the path
   * relative to the root with "/" separators, and a trailing "/" for a directory.
   */
  excluded?: (path: string) => boolean;
  /** Stops the walk (it then rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** Files stat'ed at once while walking a directory: the walk waits on the disk, not on the CPU. */
const statConcurrency = 32;
const slash = Buffer.from("/");

/**
 * Visits everything below `root` (not the root itself): parents before their contents, in
 * byte order of the names within a directory, never following a symlink. Names are read as
 * raw bytes, so names that are not UTF-8 survive. An entry or directory that disappears or
 * cannot be read while the walk runs is skipped (a directory that cannot be listed is still
 * visited itself). `visit` is awaited, so a slow consumer slows the walk down.
 */
export async function walkTree(
  root: string,
  visit: (entry: TreeEntry) => Promise<void> | void,
  options: WalkOptions = {},
): Promise<void> {
  const rootBytes = Buffer.from(root);
  const absolute = (path: Buffer) => Buffer.concat([rootBytes, slash, path]);

  const walkDirectory = async (dir: Buffer | undefined): Promise<void> => {
    let dirents: Dirent<Buffer>[];
    try {
      dirents = await readdir(dir ? absolute(dir) : rootBytes, { withFileTypes: true, encoding: "buffer" });
    } catch (error) {
      if (vanishedOrUnreadable(error)) return;
      throw error;
    }
    dirents.sort((a, b) => Buffer.compare(a.name, b.name));
    const entries: TreeEntry[] = [];
    for (const dirent of dirents) {
      const path = dir ? Buffer.concat([dir, slash, dirent.name]) : dirent.name;
      const kind = kindOf(dirent);
      if (options.excluded?.(kind === "directory" ? `${path.toString()}/` : path.toString())) continue;
      entries.push({ path, kind, size: 0 });
    }
    for (let start = 0; start < entries.length; start += statConcurrency) {
      options.signal?.throwIfAborted();
      const batch = entries.slice(start, start + statConcurrency);
      // Regular files are stat'ed for their size; one replaced meanwhile takes its new kind.
      const stats = await Promise.all(
        batch.map((entry) => (entry.kind === "file" ? lstatIfPresent(absolute(entry.path)) : undefined)),
      );
      for (const [i, entry] of batch.entries()) {
        const stat = stats[i];
        if (entry.kind === "file") {
          if (!stat) continue;
          entry.kind = kindOf(stat);
          entry.size = entry.kind === "file" ? stat.size : 0;
        }
        await visit(entry);
        if (entry.kind === "directory") await walkDirectory(entry.path);
      }
    }
  };

  await walkDirectory(undefined);
}

function kindOf(object: Dirent<Buffer> | Stats): EntryKind {
  if (object.isFile()) return "file";
  if (object.isDirectory()) return "directory";
  if (object.isSymbolicLink()) return "symlink";
  return "other";
}

async function lstatIfPresent(path: Buffer): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    if (vanishedOrUnreadable(error)) return undefined;
    throw error;
  }
}

function vanishedOrUnreadable(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "EACCES" || code === "EPERM";
}

/**
 * Compiles gitignore-syntax rules into an `excluded` test for {@link walkTree}: the rules of
 * `ignoreFile` (relative to `root`; a missing file adds none), then `patterns`. The ignore
 * file must lie inside `root`, also after following symlinks: otherwise this fails with a
 * RangeError. Undefined when there are no rules.
 */
export async function compileIgnoreRules(
  root: string,
  ignoreFile: string | undefined,
  patterns: readonly string[] = [],
): Promise<((path: string) => boolean) | undefined> {
  const rules = ignore();
  let count = patterns.length;
  if (ignoreFile) {
    const text = await readIgnoreFile(root, ignoreFile);
    if (text !== undefined) {
      rules.add(text);
      count++;
    }
  }
  if (count === 0) return undefined;
  rules.add(patterns);
  return (path) => rules.ignores(path);
}

async function readIgnoreFile(root: string, ignoreFile: string): Promise<string | undefined> {
  const outside = () => new RangeError(`the ignore file ${JSON.stringify(ignoreFile)} is outside ${root}`);
  const rootReal = await realpath(root);
  const lexical = resolve(rootReal, ignoreFile);
  if (!isInside(lexical, rootReal)) throw outside();
  let real: string;
  try {
    real = await realpath(lexical);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw error;
  }
  if (!isInside(real, rootReal)) throw outside();
  return readFile(real, "utf8");
}

function isInside(path: string, root: string): boolean {
  return path.startsWith(root.endsWith(sep) ? root : `${root}${sep}`);
}
