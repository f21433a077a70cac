import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmod, chown, lstat, mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { promisify } from "node:util";
import { readJsonObject, writeJsonFile } from "../json-file.js";
import { SANDBOX_ID_PATTERN, type SandboxDirs, type SandboxLimits, SandboxSetupError } from "./types.js";

const run = promisify(execFile);

/** Longest host path of a Unix socket we accept (sun_path holds 108 bytes; keep a margin). */
export const MAX_SOCKET_PATH_BYTES = 100;
/** Room left in the run dir for a socket's file name (e.g. `runner.sock`). */
export const SOCKET_NAME_RESERVE_BYTES = 24;

/**
 * Where things live inside a bwrap sandbox. The workspace is a folder of the home, not a
 * mount of its own: the runner unpacks a restored snapshot beside it and swaps it in by
 * renaming, which needs its parent writable and on the same filesystem.
 */
export const INNER_DIRS: SandboxDirs = {
  workspace: "/home/user/workspace",
  home: "/home/user",
  tmp: "/tmp",
  run: "/run/devex",
};

/** The small JSON record that lets a restarted core reopen a sandbox. */
export interface SandboxRecord {
  id: string;
  kind: "bwrap" | "none";
  uid: number;
  gid: number;
  createdAtMs: number;
  limits: SandboxLimits;
  /** bwrap: the cgroup version and each controller's sandbox group (host paths). */
  cgroups?: { version: 1 | 2; groups: Record<string, string> };
  /** none: process groups spawned, so a restarted core can still signal them. */
  processGroups?: number[];
}

/** Paths of one sandbox under the root. */
export interface SandboxPaths {
  /** `<root>/<id>`: 0700, owned by the sandbox uid. */
  base: string;
  dirs: SandboxDirs;
  record: string;
  /** Generated /etc files (root-only directory, handed to bwrap as file descriptors). */
  etc: string;
}

/** Root-only directory for records, generated files and the seccomp filter. */
export const stateDir = (root: string): string => join(root, ".state");
/** Root-only directory of uid lease files. */
export const leasesDir = (root: string): string => join(root, ".leases");

/** Returns a fresh sandbox id: `sbx_` + 12 lowercase base32 characters. */
export function newSandboxId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  let id = "sbx_";
  for (const byte of randomBytes(12)) id += alphabet[byte & 31];
  return id;
}

/** Throws unless `id` is a valid sandbox id (it becomes a path and a cgroup name). */
export function assertSandboxId(id: string): void {
  if (!SANDBOX_ID_PATTERN.test(id)) {
    throw new Error(`invalid sandbox id ${JSON.stringify(id)}: expected sbx_ and 12 lowercase base32 characters`);
  }
}

export function sandboxPaths(root: string, id: string): SandboxPaths {
  const base = join(root, id);
  return {
    base,
    dirs: {
      workspace: join(base, "home", "workspace"),
      home: join(base, "home"),
      tmp: join(base, "tmp"),
      run: join(base, "run"),
    },
    record: join(stateDir(root), `${id}.json`),
    etc: join(stateDir(root), `${id}.etc`),
  };
}

/** Refuses a root whose run dirs would make socket paths too long for sun_path. */
export function assertSocketPathBudget(paths: SandboxPaths): void {
  const bytes = Buffer.byteLength(paths.dirs.run) + 1 + SOCKET_NAME_RESERVE_BYTES;
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    throw new SandboxSetupError(
      `sandbox root is too long for Unix sockets: ${paths.dirs.run}/<socket> would take up to ${bytes} bytes ` +
        `(limit ${MAX_SOCKET_PATH_BYTES}); choose a shorter sandbox root`,
    );
  }
}

/** Creates the root, its root-only state and lease dirs; `traversable` lets other uids pass through. */
export async function prepareRoot(root: string, traversable: boolean): Promise<void> {
  await mkdir(root, { recursive: true });
  if (traversable) await chmod(root, 0o711);
  for (const dir of [stateDir(root), leasesDir(root)]) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
  }
}

/** The first ancestor of `path` that other uids may not traverse (bwrap runs as the sandbox uid), if any. */
export async function closedAncestor(path: string): Promise<{ dir: string; mode: number } | undefined> {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const mode = (await stat(dir)).mode & 0o777;
    if ((mode & 0o001) === 0) return { dir, mode };
    if (dir === dirname(dir)) return undefined;
  }
}

/** Throws unless every ancestor of `path` lets any uid traverse it. */
export async function assertTraversable(path: string, what: string): Promise<void> {
  const closed = await closedAncestor(path);
  if (closed) {
    throw new SandboxSetupError(
      `${what} ${path} is not reachable by sandbox uids: ${closed.dir} has mode ${closed.mode.toString(8)}; ` +
        `run 'chmod o+x ${closed.dir}' or choose a path under a world-traversable directory`,
    );
  }
}

/** A host path bound read-only into every sandbox at `dest`. */
export interface ReadOnlyBind {
  source: string;
  dest: string;
}

/**
 * Where each read-only path is bound from. A path every uid can reach is bound as it is; one
 * under a folder closed to other uids (a checkout in a 0700 home or temporary folder) is
 * staged first under `<root>/.runtime` as hard links (a copy across filesystems), since bwrap
 * resolves bind sources as the sandbox's uid; inside the sandbox it is at its own path either
 * way. A staged copy is named by what it holds (each file's path, inode, size and time), so a
 * rebuilt runner gets a new one, and cores sharing the root (or restarting while sandboxes run
 * on an older copy) never pull one from under another.
 */
export async function readOnlyBinds(root: string, paths: readonly string[]): Promise<ReadOnlyBind[]> {
  const binds: ReadOnlyBind[] = [];
  for (const path of paths) {
    await stat(path).catch(() => {
      throw new SandboxSetupError(`read-only path ${path} does not exist: fix readOnlyPaths`);
    });
    binds.push({ source: (await closedAncestor(path)) ? await stage(root, path) : path, dest: path });
  }
  return binds;
}

/** Stages `path` under `<root>/.runtime/<signature>/` (once) and returns the staged path. */
async function stage(root: string, path: string): Promise<string> {
  const runtime = join(root, ".runtime");
  const dir = join(runtime, await treeSignature(path));
  const staged = join(dir, path);
  if (
    await stat(staged).then(
      () => true,
      () => false,
    )
  )
    return staged;
  const temporary = `${dir}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await mkdir(dirname(join(temporary, path)), { recursive: true, mode: 0o755 });
    await run("cp", ["-al", path, join(temporary, path)]).catch(() => run("cp", ["-a", path, join(temporary, path)]));
    // The folders are new (only files are links): readable by all, they hold code, never secrets.
    await run("find", [temporary, "-type", "d", "-exec", "chmod", "go+rx", "{}", "+"]);
    await chmod(runtime, 0o755);
    await rename(temporary, dir).catch((error: NodeJS.ErrnoException) => {
      // Another core staged the same tree meanwhile: use its copy.
      if (error.code !== "EEXIST" && error.code !== "ENOTEMPTY") throw error;
    });
  } finally {
    await rm(temporary, { recursive: true, force: true });
  }
  return staged;
}

/** A short hash of every entry under `path`: its relative path, inode, size and modification time. */
async function treeSignature(path: string): Promise<string> {
  const hash = createHash("sha256").update(path);
  const visit = async (current: string) => {
    const info = await lstat(current);
    hash.update(`\0${relative(path, current)}\0${info.ino}\0${info.size}\0${info.mtimeMs}`);
    if (!info.isDirectory()) return;
    for (const name of (await readdir(current)).sort()) await visit(join(current, name));
  };
  await visit(path);
  return hash.digest("hex").slice(0, 16);
}

/** Creates `<root>/<id>` (0700) and its dirs, owned by the sandbox uid. */
export async function createHostDirs(paths: SandboxPaths, uid: number, gid: number): Promise<void> {
  try {
    await mkdir(paths.base, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    throw new Error(
      `${paths.base} already exists (kept dirs of an earlier sandbox?): remove it or use a new sandbox id`,
    );
  }
  await chown(paths.base, uid, gid);
  await chmod(paths.base, 0o700);
  const modes: Record<keyof SandboxDirs, number> = { workspace: 0o755, home: 0o700, tmp: 0o1777, run: 0o700 };
  for (const key of Object.keys(modes) as (keyof SandboxDirs)[]) {
    await mkdir(paths.dirs[key], { recursive: true });
    await chown(paths.dirs[key], uid, gid);
    await chmod(paths.dirs[key], modes[key]);
  }
}

/** Writes /etc/passwd, /etc/group and /etc/hosts naming the sandbox user `user`. */
export async function writeEtcFiles(paths: SandboxPaths, uid: number, gid: number, hostname: string): Promise<void> {
  await mkdir(paths.etc, { recursive: true, mode: 0o700 });
  const files: Record<string, string> = {
    passwd: `root:x:0:0:root:/root:/usr/sbin/nologin\nuser:x:${uid}:${gid}:user:${INNER_DIRS.home}:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    group: `root:x:0:\nuser:x:${gid}:\nnogroup:x:65534:\n`,
    hosts: `127.0.0.1\tlocalhost ${hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`,
  };
  for (const [name, text] of Object.entries(files)) await writeFile(join(paths.etc, name), text, { mode: 0o600 });
}

/** Writes a record atomically (temp file + rename). */
export function writeRecord(paths: SandboxPaths, record: SandboxRecord): Promise<void> {
  return writeJsonFile(paths.record, record);
}

/** The sandbox's record; undefined when it has none (or one that is not a JSON object). */
export async function readRecord(paths: SandboxPaths): Promise<SandboxRecord | undefined> {
  return (await readJsonObject(paths.record)) as SandboxRecord | undefined;
}

/** Throws unless every limit is a positive integer. */
export function assertLimits(limits: SandboxLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value <= 0)
      throw new Error(`sandbox limit ${name} must be a positive integer, got ${value}`);
  }
}

/** Ids of the sandboxes of `kind` with a record under the root. */
export async function listRecords(root: string, kind: SandboxRecord["kind"]): Promise<string[]> {
  const ids: string[] = [];
  for (const id of await recordIds(root)) {
    if ((await readRecord(sandboxPaths(root, id)))?.kind === kind) ids.push(id);
  }
  return ids;
}

/** Ids of every sandbox with a record under the root. */
async function recordIds(root: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(stateDir(root));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  return names
    .filter((name) => name.endsWith(".json"))
    .map((name) => name.slice(0, -".json".length))
    .filter((id) => SANDBOX_ID_PATTERN.test(id))
    .sort();
}

/** Removes the record and generated files; the host dirs too unless `keepDirs`. */
export async function removeSandboxFiles(paths: SandboxPaths, keepDirs: boolean): Promise<void> {
  if (!keepDirs) await rm(paths.base, { recursive: true, force: true });
  await rm(paths.etc, { recursive: true, force: true });
  await rm(paths.record, { force: true });
}
