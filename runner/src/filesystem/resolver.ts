import {
  type BigIntStats,
  close as closeCallback,
  closeSync,
  constants,
  fsync,
  open as openCallback,
  openSync,
} from "node:fs";
import { lstat, mkdir, open, readlink } from "node:fs/promises";
import { basename } from "node:path";
import { promisify } from "node:util";
import { Code } from "@connectrpc/connect";
import { errnoOf, pathError, toConnectError } from "./errors.js";
import { joinRelative, splitRequestPath, stripWorkspace } from "./paths.js";

/** Symlinks followed while resolving one path before giving up, as Linux does (MAXSYMLINKS). */
const maxSymlinkHops = 40;

/** Flags for opening a directory: never through a symlink at the last component. */
const directoryFlags = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

const openFd = promisify(openCallback);
const closeFd = promisify(closeCallback);
const fsyncFd = promisify(fsync);

/**
 * A directory inside the workspace, held open by descriptor.
 *
 * Every operation on an entry of the directory goes through `/proc/self/fd/<fd>/<name>`:
 * the kernel reaches the directory through the open descriptor (as openat(2) would), not by
 * walking its path again, so a directory renamed, or a symlink swapped in for a directory on
 * the way, after the directory was checked cannot redirect the operation outside the
 * workspace.
 */
export class Directory {
  private closed = false;

  private constructor(
    private readonly fd: number,
    private readonly shared: boolean,
  ) {}

  /** Opens a directory (never through a symlink at the last component of `path`). */
  static async open(path: string): Promise<Directory> {
    return new Directory(await openFd(path, directoryFlags), false);
  }

  /** Wraps a descriptor that stays open for the life of the service (the workspace root). */
  static shared(fd: number): Directory {
    return new Directory(fd, true);
  }

  /** A path that reaches `name` in this directory through the descriptor. */
  entry(name: string): string {
    return `/proc/self/fd/${this.fd}/${name}`;
  }

  /**
   * A path that reaches the directory itself through the descriptor. Its last component is
   * the descriptor's magic link, so it cannot be opened with O_NOFOLLOW; use `entry(".")`.
   */
  get self(): string {
    return `/proc/self/fd/${this.fd}`;
  }

  /** The directory's real path now, as the kernel knows it. */
  async realPath(): Promise<string> {
    return readlink(this.self);
  }

  /** Flushes the directory's entries (a rename in it) to disk. */
  async sync(): Promise<void> {
    await fsyncFd(this.fd);
  }

  /** Closes the descriptor, once (the workspace root's shared descriptor stays open). */
  async close(): Promise<void> {
    if (this.shared || this.closed) return;
    this.closed = true;
    await closeFd(this.fd);
  }
}

/**
 * Sets the permission bits of a directory without following a symlink swapped in at `path`
 * (chmod(2) would follow it): the directory is opened with O_NOFOLLOW and changed through
 * its descriptor.
 */
export async function chmodDirectory(path: string, mode: number): Promise<void> {
  const handle = await open(path, directoryFlags);
  try {
    await handle.chmod(mode);
  } finally {
    await handle.close();
  }
}

/** Opens the workspace root for good, checking that entries can be reached through /proc/self/fd. */
function openRoot(workspace: string): Directory {
  const fd = openSync(workspace, directoryFlags);
  const root = Directory.shared(fd);
  try {
    closeSync(openSync(root.entry("."), directoryFlags));
  } catch (error) {
    closeSync(fd);
    throw new Error("the filesystem service needs /proc/self/fd (Linux)", { cause: error });
  }
  return root;
}

/** Where a request path led: the directory holding the entry, and the entry's name in it. */
export interface Located {
  /** The parent directory, held open; release it with {@link Located.close}. */
  dir: Directory;
  /** The entry's name in `dir`; "." for the workspace root itself. */
  name: string;
  /** The entry's canonical workspace-relative path ("." for the root). */
  rel: string;
  /** The path as the client spelled it, for error messages. */
  display: string;
  /** The entry as seen (without following it) when it was resolved; undefined if it does not exist. */
  stats: BigIntStats | undefined;
  /** Whether this is the workspace root. */
  isRoot: boolean;
  /** Whether the path ended with "/" (or "/."), so that only a directory may be there. */
  directoryOnly: boolean;
  /** A path that reaches the entry through the parent's descriptor. */
  path: string;
  /**
   * Opens the entry as a directory, without following a symlink; ABORTED if it was replaced
   * since it was resolved (a symlink swapped in, say).
   */
  openDirectory(): Promise<Directory>;
  /** Releases the parent directory's descriptor. */
  close(): Promise<void>;
}

/** Options for {@link Resolver.resolve}. */
export interface ResolveOptions {
  /** Follow a symlink at the last component too (only to a target inside the workspace). */
  follow?: boolean;
  /** Create missing parent directories (mode 0755 less the umask) on the way. */
  createParents?: boolean;
}

/**
 * Resolves request paths to entries inside the workspace, refusing anything that leaves it.
 *
 * The walk starts at the workspace root's descriptor and opens one real directory at a time
 * with O_NOFOLLOW. Symlinks are expanded by the resolver itself, so each one is checked: an
 * absolute target must lie below the workspace's real path, and ".." at the root is an
 * escape, even if a later step would come back in ("at any step", as the contract says). At
 * the end, the real path of the directory that holds the entry is read back from
 * /proc/self/fd and must still be inside the workspace. Operations then act on the entry
 * through that descriptor (see {@link Directory}) and open the entry itself with O_NOFOLLOW,
 * so a symlink swapped in after the walk makes them fail instead of leave the workspace.
 *
 * More than 40 symlinks in one resolution (a loop) is FAILED_PRECONDITION: the contract's
 * table has no row for it, and it is a state of the filesystem, not a malformed argument.
 * Mount points inside the workspace are taken as part of it, as they appear there.
 */
export class Resolver {
  private root: Directory;

  /**
   * Opens the workspace root (a real absolute path); fails where /proc/self/fd is missing
   * (not Linux). The root's descriptor is never closed: a call still running when the service
   * closes may use it, and a closed descriptor number can be reused for another file.
   */
  constructor(readonly workspace: string) {
    this.root = openRoot(workspace);
  }

  /**
   * Opens the workspace root again, once another directory has taken its place (an import
   * swaps a new tree in): from then on paths resolve in the new tree. A call still running
   * keeps the old tree's descriptor, which stays open (one descriptor per swap) for the same
   * reason as in the constructor; such a call fails as having left the workspace.
   */
  reopen(): void {
    this.root = openRoot(this.workspace);
  }

  /** Resolves a request path; see the class comment for the rules. */
  async resolve(input: string, options: ResolveOptions = {}): Promise<Located> {
    const parts = splitRequestPath(input, this.workspace);
    return this.walk(parts, input, options);
  }

  /** Resolves a request path and runs `fn` with it, releasing the descriptor afterwards. */
  async with<T>(input: string, options: ResolveOptions, fn: (located: Located) => Promise<T>): Promise<T> {
    const located = await this.resolve(input, options);
    try {
      return await fn(located);
    } finally {
      await located.close();
    }
  }

  /** The real absolute path of a located entry (for "into itself" checks). */
  async realPathOf(located: Located): Promise<string> {
    if (located.isRoot) return this.workspace;
    const parent = await located.dir.realPath();
    return parent === "/" ? `/${located.name}` : `${parent}/${located.name}`;
  }

  private async walk(parts: string[], display: string, options: ResolveOptions): Promise<Located> {
    const queue = parts.slice();
    // One root for the whole walk, even if the workspace is replaced meanwhile.
    const root = this.root;
    let dir = root;
    let depth = 0;
    let hops = 0;
    let name: string | undefined;
    let stats: BigIntStats | undefined;
    let directoryOnly = false;
    // The last component was looked at and was not there (as opposed to not looked at yet).
    let missing = false;
    try {
      while (queue.length > 0) {
        const part = queue.shift() as string;
        if (part === "" || part === ".") continue;
        if (part === "..") {
          if (depth === 0) throw pathError(Code.PermissionDenied, display, "leads outside the workspace");
          const parent = await Directory.open(dir.entry(".."));
          await dir.close();
          dir = parent;
          depth--;
          continue;
        }
        // "a/" and "a/." name the directory a: follow a symlink there, as the kernel does.
        const last = queue.every((p) => p === "" || p === ".");
        const slash = last && queue.length > 0;
        if (last && !options.follow && !slash) {
          name = part;
          break;
        }
        let entry: BigIntStats;
        try {
          entry = await lstat(dir.entry(part), { bigint: true });
        } catch (error) {
          if (errnoOf(error) !== "ENOENT") throw toConnectError(error, display);
          if (last) {
            name = part;
            directoryOnly = slash;
            missing = true;
            break;
          }
          if (!options.createParents) {
            throw pathError(Code.NotFound, display, "cannot be reached: a parent directory does not exist", error);
          }
          await mkdir(dir.entry(part), 0o755).catch((e: unknown) => {
            if (errnoOf(e) !== "EEXIST") throw toConnectError(e, display);
          });
          queue.unshift(part);
          continue;
        }
        if (entry.isSymbolicLink()) {
          if (++hops > maxSymlinkHops) {
            throw pathError(Code.FailedPrecondition, display, "has too many levels of symbolic links (a loop?)");
          }
          let target: string;
          try {
            target = await readlink(dir.entry(part));
          } catch (error) {
            // No longer a symlink (replaced since the lstat): look at it again.
            const code = errnoOf(error);
            if (code !== "EINVAL" && code !== "ENOENT") throw toConnectError(error, display);
            queue.unshift(part);
            continue;
          }
          if (target.startsWith("/")) {
            const inside = stripWorkspace(target, this.workspace);
            if (inside === undefined) {
              throw pathError(Code.PermissionDenied, display, "leads outside the workspace through a symlink");
            }
            await dir.close();
            dir = root;
            depth = 0;
            queue.unshift(...inside.split("/"));
          } else {
            queue.unshift(...target.split("/"));
          }
          continue;
        }
        if (last) {
          name = part;
          stats = entry;
          directoryOnly = slash;
          break;
        }
        if (!entry.isDirectory()) {
          throw pathError(
            Code.FailedPrecondition,
            display,
            `cannot be reached: ${JSON.stringify(part)} is not a directory`,
          );
        }
        let child: Directory;
        try {
          child = await Directory.open(dir.entry(part));
        } catch (error) {
          // Replaced between lstat and open (a symlink swapped in, say): look at it again.
          const code = errnoOf(error);
          if ((code === "ELOOP" || code === "ENOTDIR" || code === "ENOENT") && ++hops <= maxSymlinkHops) {
            queue.unshift(part);
            continue;
          }
          throw toConnectError(error, display);
        }
        await dir.close();
        dir = child;
        depth++;
      }

      if (name === undefined) {
        // The path names a directory itself ("." or "a/.."): describe it from its parent.
        if (depth === 0) {
          const rootStats = await lstat(root.entry("."), { bigint: true });
          return this.located(root, ".", ".", display, rootStats, true, false);
        }
        name = basename(await dir.realPath());
        const parent = await Directory.open(dir.entry(".."));
        await dir.close();
        dir = parent;
      }

      const inside = stripWorkspace(await dir.realPath(), this.workspace);
      if (inside === undefined) {
        throw pathError(Code.PermissionDenied, display, "leads outside the workspace (it was moved during the call)");
      }
      if (stats === undefined && !missing) {
        stats = await lstat(dir.entry(name), { bigint: true }).catch((error: unknown) => {
          if (errnoOf(error) === "ENOENT") return undefined;
          throw toConnectError(error, display);
        });
      }
      if (directoryOnly && stats && !stats.isDirectory()) {
        throw pathError(Code.FailedPrecondition, display, "is not a directory (the path ends with /)");
      }
      const rel = joinRelative(inside === "" ? "." : inside, name);
      return this.located(dir, name, rel, display, stats, false, directoryOnly);
    } catch (error) {
      await dir.close();
      throw toConnectError(error, display);
    }
  }

  private located(
    dir: Directory,
    name: string,
    rel: string,
    display: string,
    stats: BigIntStats | undefined,
    isRoot: boolean,
    directoryOnly: boolean,
  ): Located {
    return {
      dir,
      name,
      rel,
      display,
      stats,
      isRoot,
      directoryOnly,
      path: dir.entry(name),
      async openDirectory() {
        try {
          return await Directory.open(dir.entry(name));
        } catch (error) {
          const code = errnoOf(error);
          if (code === "ELOOP" || code === "ENOTDIR" || code === "ENOENT") {
            throw pathError(Code.Aborted, display, "was replaced while it was being opened; try again", error);
          }
          throw toConnectError(error, display);
        }
      },
      close: () => dir.close(),
    };
  }
}
