import { createHash, randomUUID } from "node:crypto";
import type { Dirent } from "node:fs";
import {
  access,
  constants,
  type FileHandle,
  mkdir,
  open,
  readdir,
  rename,
  rmdir,
  stat,
  unlink,
} from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { BatchedWriter } from "./batched-writer.js";
import {
  type AbortUploadsOptions,
  compareWorkspaceKeys,
  type GetOptions,
  InvalidWorkspaceKeyError,
  type ListedObject,
  type ListOptions,
  type ListResult,
  listAll,
  type ObjectInfo,
  type PutOptions,
  type PutResult,
  readWorkspaceBody,
  resolveListLimit,
  validateWorkspaceKey,
  validateWorkspacePrefix,
  type WorkspaceBody,
  WorkspaceObjectNotFoundError,
  type WorkspaceStore,
} from "./store.js";

/** Options for {@link createFilesystemWorkspaceStore}. */
export interface FilesystemWorkspaceStoreOptions {
  /** The directory holding the objects; created if missing. Key `a/b/c` is the file `<root>/a/b/c`. */
  root: string;
}

/** Uploads in progress are files named with this prefix next to their target; no key segment may start with it. */
const TEMP_PREFIX = ".devex-tmp-";
/** The longest file name on common filesystems: a key segment is a file or directory name. */
const MAX_SEGMENT_BYTES = 255;

/**
 * A workspace store over a local directory, for single-node setups and tests. A put writes a
 * temporary file in the target's directory, fsyncs it and renames it into place, so readers
 * never see a partial object; a crash mid-put leaves the temporary file, which
 * {@link WorkspaceStore.abortUploads} and {@link WorkspaceStore.deletePrefix} remove. Deletes
 * remove the directories they empty. Besides the common key rules, a segment is at most 255
 * bytes and may not start with `.devex-tmp-`.
 */
export async function createFilesystemWorkspaceStore(
  options: FilesystemWorkspaceStoreOptions,
): Promise<WorkspaceStore> {
  const root = resolve(options.root);
  // Snapshots are users' files: no other uid of the machine (a repl's, say) may read them.
  await mkdir(root, { recursive: true, mode: 0o700 });
  return new FilesystemWorkspaceStore(root);
}

class FilesystemWorkspaceStore implements WorkspaceStore {
  readonly driver = "filesystem";

  constructor(private readonly root: string) {}

  async put(key: string, body: WorkspaceBody, options: PutOptions = {}): Promise<PutResult> {
    const path = this.pathOf(key);
    const controller = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
    signal.throwIfAborted();
    const directory = dirname(path);
    const temp = join(directory, `${TEMP_PREFIX}${randomUUID()}`);
    const handle = await createIn(directory, temp);
    const hash = createHash("sha256");
    let bytes = 0;
    let closed = false;
    const writer = new BatchedWriter(handle);
    try {
      for await (const chunk of readWorkspaceBody(body, signal)) {
        hash.update(chunk);
        await writer.write(chunk);
        bytes += chunk.length;
        options.onProgress?.(bytes);
      }
      await writer.finish();
      await handle.sync();
      await handle.close();
      closed = true;
      signal.throwIfAborted();
      await rename(temp, path);
    } catch (error) {
      controller.abort();
      if (!closed) await handle.close().catch(() => {});
      await unlink(temp).catch(() => {});
      throw error;
    }
    await syncDirectory(directory);
    return { bytes, sha256: hash.digest("hex") };
  }

  async get(key: string, options: GetOptions = {}): Promise<AsyncIterable<Uint8Array>> {
    const path = this.pathOf(key);
    options.signal?.throwIfAborted();
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(path, "r");
    } catch (error) {
      if (isMissing(error)) throw new WorkspaceObjectNotFoundError(key, { cause: error });
      throw error;
    }
    const info = await handle.stat().catch(async (error: unknown) => {
      await handle.close();
      throw error;
    });
    if (!info.isFile()) {
      await handle.close();
      throw new WorkspaceObjectNotFoundError(key);
    }
    return handle.createReadStream(options.signal ? { signal: options.signal } : {});
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const path = this.pathOf(key);
    try {
      const info = await stat(path);
      return info.isFile() ? { bytes: info.size, modifiedAtMs: info.mtimeMs } : undefined;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListResult> {
    validateWorkspacePrefix(prefix);
    const limit = resolveListLimit(options.limit);
    const found: ListedObject[] = [];
    // One more than the page, to know whether there is a next one.
    await this.walk(prefix, options.after, limit + 1, found);
    if (found.length <= limit) return { keys: found };
    const keys = found.slice(0, limit);
    return { keys, nextAfter: keys.at(-1)?.key };
  }

  async delete(key: string): Promise<void> {
    const path = this.pathOf(key);
    try {
      if (!(await stat(path)).isFile()) return;
      await unlink(path);
    } catch (error) {
      if (!isMissing(error)) throw error;
      return;
    }
    await this.removeEmptyDirectories(dirname(path));
  }

  async deletePrefix(prefix: string): Promise<number> {
    validateWorkspacePrefix(prefix, true);
    let deleted = 0;
    for await (const { key } of listAll(this, prefix)) {
      await unlink(this.pathOf(key)).then(
        () => deleted++,
        (error: unknown) => {
          if (!isMissing(error)) throw error;
        },
      );
    }
    await this.sweep(prefix, () => true);
    return deleted;
  }

  async abortUploads(prefix: string, options: AbortUploadsOptions = {}): Promise<number> {
    validateWorkspacePrefix(prefix, true);
    const before = options.startedBeforeMs ?? Number.POSITIVE_INFINITY;
    return this.sweep(prefix, (lastWriteMs) => lastWriteMs < before);
  }

  async ping(): Promise<boolean> {
    try {
      await access(this.root, constants.R_OK | constants.W_OK);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {}

  /**
   * Removes the temporary files under the directory of `prefix` that `stale` picks (by their
   * last write, in ms since the epoch), then every directory there that is left empty, the
   * prefix's own and its parents' included (never the root). Returns how many uploads it removed.
   */
  private async sweep(prefix: string, stale: (lastWriteMs: number) => boolean): Promise<number> {
    let removed = 0;
    const visit = async (directory: string): Promise<void> => {
      let entries: Dirent[];
      try {
        entries = await readdir(directory, { withFileTypes: true });
      } catch (error) {
        if (isMissing(error)) return;
        throw error;
      }
      for (const entry of entries) {
        const path = join(directory, entry.name);
        if (entry.isDirectory()) {
          await visit(path);
        } else if (entry.name.startsWith(TEMP_PREFIX) && entry.isFile()) {
          const info = await stat(path).catch((error: unknown) => {
            if (isMissing(error)) return undefined;
            throw error;
          });
          if (!info || !stale(info.mtimeMs)) continue;
          await unlink(path).then(
            () => removed++,
            (error: unknown) => {
              if (!isMissing(error)) throw error;
            },
          );
        }
      }
      await this.removeEmptyDirectory(directory);
    };
    const directory = join(this.root, ...prefix.split("/").filter(Boolean));
    await visit(directory);
    await this.removeEmptyDirectories(dirname(directory));
    return removed;
  }

  /** Removes `directory` if it is empty and not the root; whether it is gone. */
  private async removeEmptyDirectory(directory: string): Promise<boolean> {
    if (directory === this.root || !directory.startsWith(`${this.root}/`)) return false;
    try {
      await rmdir(directory);
      return true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOTEMPTY" || code === "EEXIST" || code === "ENOENT" || code === "ENOTDIR") return false;
      throw error;
    }
  }

  /** Removes `directory` and its parents below the root, as long as each is empty. */
  private async removeEmptyDirectories(directory: string): Promise<void> {
    for (let current = directory; await this.removeEmptyDirectory(current); current = dirname(current));
  }

  private pathOf(key: string): string {
    validateWorkspaceKey(key);
    for (const segment of key.split("/")) {
      if (segment.startsWith(TEMP_PREFIX)) {
        throw new InvalidWorkspaceKeyError(key, `a segment starts with the reserved ${TEMP_PREFIX}`);
      }
      if (Buffer.byteLength(segment, "utf8") > MAX_SEGMENT_BYTES) {
        throw new InvalidWorkspaceKeyError(key, `a segment is longer than ${MAX_SEGMENT_BYTES} bytes (a file name)`);
      }
    }
    return join(this.root, ...key.split("/"));
  }

  /**
   * Collects up to `want` objects whose keys start with `prefix` and come after `after`, in
   * byte order: a depth-first walk visiting each directory's entries ordered by their name,
   * with `/` appended to directories (all keys below `d` start with `d/`).
   */
  private async walk(prefix: string, after: string | undefined, want: number, found: ListedObject[]): Promise<void> {
    const slash = prefix.lastIndexOf("/");
    const base = slash < 0 ? "" : prefix.slice(0, slash + 1);
    const visit = async (keyPrefix: string): Promise<void> => {
      let entries: Dirent[];
      try {
        entries = await readdir(join(this.root, ...keyPrefix.split("/").filter(Boolean)), { withFileTypes: true });
      } catch (error) {
        if (isMissing(error) || (error as NodeJS.ErrnoException).code === "ENOTDIR") return;
        throw error;
      }
      const named = entries
        .filter((entry) => !entry.name.startsWith(TEMP_PREFIX) && (entry.isFile() || entry.isDirectory()))
        .map((entry) => ({ entry, key: `${keyPrefix}${entry.name}${entry.isDirectory() ? "/" : ""}` }))
        .sort((a, b) => compareWorkspaceKeys(a.key, b.key));
      for (const { entry, key } of named) {
        if (found.length >= want) return;
        // Skip what cannot match the prefix, and subtrees wholly at or before `after`.
        if (!key.startsWith(prefix) && !prefix.startsWith(key)) continue;
        if (entry.isDirectory()) {
          if (after !== undefined && compareWorkspaceKeys(key, after) < 0 && !after.startsWith(key)) continue;
          await visit(key);
          continue;
        }
        if (!key.startsWith(prefix)) continue;
        if (after !== undefined && compareWorkspaceKeys(key, after) <= 0) continue;
        try {
          const info = await stat(join(this.root, ...key.split("/")));
          found.push({ key, bytes: info.size, modifiedAtMs: info.mtimeMs });
        } catch (error) {
          if (!isMissing(error)) throw error;
        }
      }
    };
    await visit(base);
  }
}

/**
 * Creates the file `path` in `directory`, making the directory first. A delete that empties
 * the directory may remove it in between: then it is made again.
 */
async function createIn(directory: string, path: string): Promise<FileHandle> {
  for (let attempt = 1; ; attempt++) {
    await mkdir(directory, { recursive: true });
    try {
      return await open(path, "wx", 0o644);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" || attempt >= 5) throw error;
    }
  }
}

async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR";
}
