import type { Dirent, Stats } from "node:fs";
import { accessSync, constants, lstatSync, readdirSync } from "node:fs";
import { readFile, realpath, stat } from "node:fs/promises";
import { resolve, sep } from "node:path";
import ignore from "ignore";

/** What kind of object a tree entry is: "device" covers block and character devices. */
export type EntryKind = "file" | "directory" | "symlink" | "fifo" | "socket" | "device";

/** While walking: an entry that vanished before it was stat'ed (never visited). */
type WalkKind = EntryKind | "gone";

/** One entry found by {@link walkTree}. */
export interface TreeEntry {
  /** The path relative to the root, as the raw bytes of the name ("/" separated). */
  path: Buffer;
  kind: EntryKind;
  /** The size of a regular file's contents in bytes (0 for other kinds). */
  size: number;
  /**
   * A regular file this process may not read, or a directory whose entries it may not list
   * (the walk then does not go below it): their permissions shut this process's user out.
   */
  unreadable: boolean;
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

/**
 * Entries handled between two turns of the event loop. The walk uses synchronous calls (a
 * readdir or lstat then costs a few microseconds instead of a round trip through the thread
 * pool, which made the walk slower than tar and zstd together) in slices this small, so it
 * never holds the event loop for more than about a millisecond.
 */
const sliceEntries = 128;
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Visits everything below `root` (not the root itself): parents before their contents, in
 * byte order of the names within a directory, never following a symlink. Names are read as
 * raw bytes, so names that are not UTF-8 survive. An entry that disappears while the walk
 * runs is skipped; one this process may not read is visited marked `unreadable` (a directory
 * that cannot be listed is visited itself, and nothing below it). A root that cannot be
 * listed fails the walk. `visit` is awaited, so a slow consumer slows the walk down.
 */
export async function walkTree(
  root: string,
  visit: (entry: TreeEntry) => Promise<void> | void,
  options: WalkOptions = {},
): Promise<void> {
  const rootBytes = Buffer.from(root);
  const absolute = (path: Buffer) => joinPath(rootBytes, path);

  const walkDirectory = async (dir: Buffer | undefined, dirents: Dirent<Buffer>[]): Promise<void> => {
    dirents.sort((a, b) => Buffer.compare(a.name, b.name));
    const entries: { path: Buffer; kind: WalkKind; size: number; unreadable: boolean }[] = [];
    for (const dirent of dirents) {
      const path = dir ? joinPath(dir, dirent.name) : dirent.name;
      const kind = kindOf(dirent);
      if (options.excluded?.(kind === "directory" ? `${path.toString()}/` : path.toString())) continue;
      entries.push({ path, kind, size: 0, unreadable: false });
    }
    for (let start = 0; start < entries.length; start += sliceEntries) {
      if (start > 0) await nextTurn();
      options.signal?.throwIfAborted();
      const slice = entries.slice(start, start + sliceEntries);
      // Regular files are stat'ed for their size; one replaced meanwhile takes its new kind.
      for (const entry of slice) {
        if (entry.kind !== "file") continue;
        const path = absolute(entry.path);
        const stat = lstatIfPresent(path);
        if (stat === "denied") {
          entry.unreadable = true;
          continue;
        }
        entry.kind = stat ? kindOf(stat) : "gone";
        entry.size = stat && entry.kind === "file" ? stat.size : 0;
        entry.unreadable = stat !== undefined && entry.kind === "file" && !mayRead(path, stat);
      }
      for (const entry of slice) {
        if (entry.kind === "gone") continue;
        const listing = entry.kind === "directory" ? await listDirectory(absolute(entry.path)) : undefined;
        const unreadable = entry.unreadable || listing === "denied";
        await visit({ path: entry.path, kind: entry.kind, size: entry.size, unreadable });
        if (Array.isArray(listing)) await walkDirectory(entry.path, listing);
      }
    }
  };

  const listDirectory = async (path: Buffer): Promise<Dirent<Buffer>[] | "denied" | undefined> => {
    await nextTurn();
    options.signal?.throwIfAborted();
    try {
      return readdirSync(path, { withFileTypes: true, encoding: "buffer" });
    } catch (error) {
      if (denied(error)) return "denied";
      if (vanished(error)) return undefined;
      throw error;
    }
  };

  const top = await listDirectory(rootBytes);
  if (top === "denied") throw new Error(`cannot list ${root}: permission denied`);
  if (top) await walkDirectory(undefined, top);
}

/** `parent/name` as bytes (Buffer.concat costs several times more for such small buffers, once per entry). */
function joinPath(parent: Buffer, name: Buffer): Buffer {
  const path = Buffer.allocUnsafe(parent.length + 1 + name.length);
  path.set(parent, 0);
  path[parent.length] = 0x2f;
  path.set(name, parent.length + 1);
  return path;
}

function kindOf(object: Dirent<Buffer> | Stats): EntryKind {
  if (object.isFile()) return "file";
  if (object.isDirectory()) return "directory";
  if (object.isSymbolicLink()) return "symlink";
  if (object.isFIFO()) return "fifo";
  if (object.isSocket()) return "socket";
  return "device";
}

/** The entry's status; undefined when it is gone, "denied" when its directory may not be searched. */
function lstatIfPresent(path: Buffer): Stats | "denied" | undefined {
  try {
    return lstatSync(path);
  } catch (error) {
    if (denied(error)) return "denied";
    if (vanished(error)) return undefined;
    throw error;
  }
}

/** Whether this process may read the file: asked only when its mode does not let everyone read it. */
function mayRead(path: Buffer, stat: Stats): boolean {
  if ((stat.mode & 0o444) === 0o444) return true;
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch (error) {
    if (denied(error)) return false;
    // Gone meanwhile: the archive leaves it out without a loss.
    if (vanished(error)) return true;
    throw error;
  }
}

function vanished(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

function denied(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "EACCES" || code === "EPERM";
}

/**
 * Compiles gitignore-syntax rules into an `excluded` test for {@link walkTree}: the rules of
 * `ignoreFile` (relative to `root`; a missing file adds none), then `patterns`. The ignore
 * file must lie inside `root`, also after following symlinks: otherwise this fails with an
 * {@link IgnoreFileError}. Undefined when there are no rules.
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

/** An ignore file that may not be used: outside the root (also through a symlink) or not a regular file. */
export class IgnoreFileError extends RangeError {
  override name = "IgnoreFileError";
  /** What is wrong with it, e.g. "is outside the directory". */
  readonly problem: string;

  constructor(ignoreFile: string, problem: string) {
    super(`the ignore file ${JSON.stringify(ignoreFile)} ${problem}`);
    this.problem = problem;
  }
}

/**
 * The text of an ignore file (relative to `root`), or undefined when there is none. Throws
 * {@link IgnoreFileError} when it lies outside `root`, lexically or after following symlinks,
 * or is not a regular file.
 */
export async function readIgnoreFile(root: string, ignoreFile: string): Promise<string | undefined> {
  const rootReal = await realpath(root);
  const lexical = resolve(rootReal, ignoreFile);
  if (!isInside(lexical, rootReal)) throw new IgnoreFileError(ignoreFile, "is not a file inside the directory");
  let real: string;
  try {
    real = await realpath(lexical);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    if (code === "ENAMETOOLONG")
      throw new IgnoreFileError(ignoreFile, "is a path over Linux's limits (255 bytes per name, 4,095 in all)");
    throw error;
  }
  if (!isInside(real, rootReal)) throw new IgnoreFileError(ignoreFile, "leads outside the directory through a symlink");
  if (!(await stat(real)).isFile()) throw new IgnoreFileError(ignoreFile, "is not a regular file");
  return readFile(real, "utf8");
}

function isInside(path: string, root: string): boolean {
  return path.startsWith(root.endsWith(sep) ? root : `${root}${sep}`);
}
