import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { resolve } from "node:path";
import { pipeline, type Readable, type Transform, type Writable } from "node:stream";
import { createGunzip, createGzip, createZstdCompress, createZstdDecompress, constants as zlib } from "node:zlib";
import { hasZstdProgram, Program } from "./archive-programs.js";
import { compileIgnoreRules, type EntryKind, type TreeEntry, walkTree } from "./archive-tree.js";

export { IgnoreFileError, readIgnoreFile } from "./archive-tree.js";

/** How the tar stream of an archive is compressed. */
export type ArchiveCompression = "zstd" | "gzip" | "none";

/**
 * How zstd data is made and read: by the `zstd` program ("program"), by Node's own zstd
 * ("zlib"), or by the program when it is on PATH and Node's otherwise ("auto", the default;
 * the program is faster because the data then goes from tar to zstd without passing
 * through Node).
 */
export type ZstdBackend = "auto" | "program" | "zlib";

/** What an archive holds, and its checksum. */
export interface ArchiveTotals {
  /** Regular files (a hard link counts as a file). */
  fileCount: number;
  /** Directories, empty ones included, the root not included. */
  directoryCount: number;
  symlinkCount: number;
  /** The total size of the regular files' contents, in bytes (uncompressed). */
  contentBytes: number;
  /** The size of the archive as compressed, in bytes. */
  archiveBytes: number;
  /** The SHA-256 of the compressed bytes, as 64 lowercase hex digits. */
  sha256: string;
}

/**
 * Why {@link packDirectory} left an entry out: an archive holds no FIFOs, sockets or devices,
 * and cannot hold what this process may not read.
 */
export type SkipReason = "fifo" | "socket" | "device" | "unreadable";

/** An entry {@link packDirectory} left out. */
export interface SkippedEntry {
  /** The path relative to the root, "/"-separated (bytes of a name that are not UTF-8 as U+FFFD). */
  path: string;
  reason: SkipReason;
}

/** The entries {@link packDirectory} lists in {@link PackTotals.skipped}, at most. */
export const maxSkippedEntries = 10;

/** What {@link packDirectory} made: the archive's totals, and what it had to leave out. */
export interface PackTotals extends ArchiveTotals {
  /**
   * The entries left out (see {@link SkipReason}); those the ignore rules leave out are not
   * counted. For a directory that could not be listed the directory itself is archived, and
   * what is below it is not.
   */
  skippedCount: number;
  /** The first {@link maxSkippedEntries} of them, in the order of the walk. */
  skipped: SkippedEntry[];
}

/** Options for {@link packDirectory}. */
export interface PackOptions {
  compression: ArchiveCompression;
  /** A gitignore-syntax file relative to the root (it must lie inside it); a missing file ignores nothing. */
  ignoreFile?: string;
  /** More gitignore-syntax patterns, applied after those of `ignoreFile`. */
  exclude?: readonly string[];
  /**
   * Make the same bytes for the same tree: entries in name order, every modification time
   * 2020-01-01T00:00:00Z. (Owners are never stored, and access and change times neither.)
   */
  reproducible?: boolean;
  /** Kills tar and the compressor; `chunks` then throws the signal's reason. */
  signal?: AbortSignal;
  /** See {@link ZstdBackend}. */
  zstdBackend?: ZstdBackend;
}

/** An archive being made. Nothing runs until `chunks` is read. */
export interface PackedArchive {
  /**
   * The compressed archive, in chunks of at most 1 MiB, made as fast as they are read (a
   * slow reader holds tar back; nothing is buffered beyond a few MiB). Stopping early
   * kills tar and the compressor.
   */
  chunks: AsyncIterable<Uint8Array>;
  /**
   * Resolves once `chunks` has been read to its end and tar and the compressor have
   * exited cleanly; rejects when making the archive failed (and `chunks` then throws) or
   * the reader stopped early.
   */
  totals: Promise<PackTotals>;
}

/** Options for {@link unpackArchive}. */
export interface UnpackOptions {
  compression: ArchiveCompression;
  /** The SHA-256 the archive bytes must hash to, as 64 hex digits. */
  expectedSha256: string;
  /** The size the archive must have, in bytes, if known. */
  expectedBytes?: number;
  /** Kills tar and the decompressor; the unpack then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** See {@link ZstdBackend}. */
  zstdBackend?: ZstdBackend;
}

/** The archive's bytes do not match the expected checksum or size: they were damaged or cut short. */
export class ArchiveIntegrityError extends Error {
  override name = "ArchiveIntegrityError";
}

/**
 * The archive is intact (its checksum matched) but cannot be unpacked safely: it is not a
 * tar archive in the stated compression, or it holds entries that would land outside the
 * target directory, or objects other than files, directories and symlinks.
 */
export class InvalidArchiveError extends Error {
  override name = "InvalidArchiveError";
}

/** The largest chunk {@link PackedArchive.chunks} yields. */
const maxChunkBytes = 64 * 1024;
/** The modification time of every entry of a reproducible archive: 2020-01-01T00:00:00Z, in seconds. */
const reproducibleMtimeSeconds = Date.UTC(2020, 0, 1) / 1000;
/** The zstd level; the CLI's default, and what `tar | zstd -3` makes. */
const zstdLevel = 3;
const gzipLevel = 6;
/** What GNU tar says when it extracts an entry under another name than the archive gives it. */
const rewrittenNames = /^tar: Removing leading /;
const nul = Buffer.from([0]);
/** The bytes of names written to tar at once while walking. */
const listBatchBytes = 32 * 1024;

/**
 * Packs the tree below `root` into a tar archive, made by GNU tar and compressed by the
 * `zstd` program (or Node's zlib). The tree is walked here (see walkTree): regular files,
 * directories (empty ones too) and symlinks, stored as links, with their permission bits
 * and modification times; owners are left out. Paths matched by the ignore rules are left
 * out, with everything below an ignored directory. Sockets, FIFOs and devices, files this
 * process may not read and the contents of directories it may not list are left out too,
 * and the totals say which ({@link PackTotals.skipped}). The list of paths streams into tar
 * while the walk runs. A file that vanishes by the time tar reaches it is left out without
 * failing the archive; the totals count what was listed.
 */
export function packDirectory(root: string, options: PackOptions): PackedArchive {
  const totals = Promise.withResolvers<PackTotals>();
  // A caller that reads only the chunks learns of a failure from them.
  totals.promise.catch(() => {});
  return { chunks: packChunks(resolve(root), options, totals), totals: totals.promise };
}

async function* packChunks(
  root: string,
  options: PackOptions,
  totals: PromiseWithResolvers<PackTotals>,
): AsyncGenerator<Uint8Array> {
  const { signal } = options;
  const programs: Program[] = [];
  const killAll = () => {
    for (const program of programs) program.kill();
  };
  signal?.addEventListener("abort", killAll);
  let settled = false;
  try {
    signal?.throwIfAborted();
    const excluded = await compileIgnoreRules(root, options.ignoreFile, options.exclude);
    const zstdProgram = options.compression === "zstd" && (await usesZstdProgram(options.zstdBackend));
    signal?.throwIfAborted();

    const tar = new Program("tar", createArguments(root, options.reproducible ?? false), ["pipe", "pipe", "pipe"]);
    programs.push(tar);
    const compressor = startCompressor(options.compression, zstdProgram, tar.child.stdout as Readable, programs);

    const counts = emptyCounts();
    const skipped: SkippedEntry[] = [];
    let skippedCount = 0;
    const list = tar.child.stdin as Writable;
    list.on("error", () => {}); // tar's exit status tells what went wrong
    const listed = (async () => {
      // Names go to tar in batches: one write per name would wake tar up for every name.
      let batch: Buffer[] = [Buffer.from(".")]; // the root itself, for its mode and time
      let batchBytes = 0;
      await walkTree(
        root,
        async (entry) => {
          const reason = skipReasonOf(entry);
          if (reason) {
            skippedCount++;
            if (skipped.length < maxSkippedEntries) skipped.push({ path: entry.path.toString(), reason });
            // A directory that cannot be listed is archived itself, empty.
            if (entry.kind !== "directory") return;
          }
          addToCounts(counts, entry);
          batch.push(nul, entry.path);
          batchBytes += entry.path.length + 1;
          if (batchBytes < listBatchBytes) return;
          await writeTo(list, Buffer.concat(batch));
          batch = [];
          batchBytes = 0;
        },
        { excluded, signal },
      );
      batch.push(nul);
      await writeTo(list, Buffer.concat(batch));
      list.end();
    })().then(
      () => undefined,
      (error: unknown) => {
        // An incomplete list must not end in an archive that looks whole.
        tar.kill();
        return error;
      },
    );

    const hash = createHash("sha256");
    let archiveBytes = 0;
    for await (const chunk of inChunks(compressor.output, maxChunkBytes)) {
      hash.update(chunk);
      archiveBytes += chunk.byteLength;
      yield chunk;
    }
    const listError = await listed;
    const [tarExit, compressorFailure] = await Promise.all([tar.exited, compressor.failure]);
    signal?.throwIfAborted();
    // Status 1 is "a file changed while it was read": the archive holds one of its states.
    // The walk's own failure (tar was killed for it) says more than tar's exit, and tar's
    // failure (the list then met a closed pipe) more than the walk's.
    if (listError && !(listError instanceof PipeClosedError)) throw listError;
    if (tarExit.code !== 0 && tarExit.code !== 1) throw new Error(`cannot pack ${root}: ${tar.describe(tarExit)}`);
    if (compressorFailure) throw new Error(`cannot compress the archive of ${root}: ${compressorFailure}`);
    if (listError) throw listError;
    totals.resolve({ ...counts, archiveBytes, sha256: hash.digest("hex"), skippedCount, skipped });
    settled = true;
  } catch (error) {
    // Killed because of the abort: the signal's reason is the cause, not a broken pipe.
    const cause = signal?.aborted ? signal.reason : error;
    totals.reject(cause);
    settled = true;
    throw cause;
  } finally {
    signal?.removeEventListener("abort", killAll);
    if (!settled) totals.reject(new Error("the archive was not read to its end"));
    killAll();
    await Promise.all(programs.map((program) => program.exited));
  }
}

/**
 * GNU tar's arguments for packing the NUL-separated list on its standard input: names taken
 * verbatim (no unquoting, no options in the list), no recursion (the list is complete),
 * POSIX format (exact modification times, any name length) without access and change
 * times, and no owners.
 */
function createArguments(root: string, reproducible: boolean): string[] {
  return [
    "--create",
    "--file=-",
    "--format=posix",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    "--ignore-failed-read",
    ...(reproducible ? ["--sort=name", `--mtime=@${reproducibleMtimeSeconds}`] : []),
    "--no-recursion",
    "--null",
    "--no-unquote",
    "--verbatim-files-from",
    `--directory=${root}`,
    "--files-from=-",
  ];
}

interface Compressor {
  output: Readable;
  /** Resolves with why compressing failed, or undefined once it has finished cleanly. */
  failure: Promise<string | undefined>;
}

function startCompressor(
  compression: ArchiveCompression,
  zstdProgram: boolean,
  tarOutput: Readable,
  programs: Program[],
): Compressor {
  if (compression === "none") return { output: tarOutput, failure: Promise.resolve(undefined) };
  if (zstdProgram) {
    // tar writes into zstd's standard input directly; Node only reads the compressed bytes.
    const zstd = new Program("zstd", [`-${zstdLevel}`, "-T1", "-q", "-c"], [tarOutput, "pipe", "pipe"]);
    programs.push(zstd);
    tarOutput.destroy();
    return { output: zstd.child.stdout as Readable, failure: failureOf(zstd) };
  }
  const transform =
    compression === "gzip"
      ? createGzip({ level: gzipLevel, chunkSize: maxChunkBytes })
      : createZstdCompress({ params: { [zlib.ZSTD_c_compressionLevel]: zstdLevel }, chunkSize: maxChunkBytes });
  return { output: transform, failure: pipeZlib(tarOutput, transform, transform) };
}

/**
 * Unpacks a tar archive from `source` into `into`, an existing, empty directory, with GNU
 * tar: modes and modification times as archived, symlinks as links, owners not restored.
 * Every byte is hashed on the way; the checksum and size are checked once the source has
 * been read to its end (a damaged archive is read to its end too), and a mismatch is an
 * {@link ArchiveIntegrityError}. Entries that would land outside `into` (absolute names,
 * "..", symlinks written through) and objects other than files, directories and symlinks
 * make it an {@link InvalidArchiveError}. After an error `into` holds whatever was
 * unpacked: the caller discards it. Resolves with the totals of what was unpacked.
 */
export async function unpackArchive(
  source: AsyncIterable<Uint8Array>,
  into: string,
  options: UnpackOptions,
): Promise<ArchiveTotals> {
  const { signal } = options;
  signal?.throwIfAborted();
  const target = resolve(into);
  if ((await readdir(target)).length > 0) throw new Error(`cannot unpack into ${target}: it is not empty`);
  const zstdProgram = options.compression === "zstd" && (await usesZstdProgram(options.zstdBackend));
  const programs: Program[] = [];
  const killAll = () => {
    for (const program of programs) program.kill();
  };
  signal?.addEventListener("abort", killAll);
  try {
    signal?.throwIfAborted();
    const { input, tar, failure } = startUnpacking(target, options.compression, zstdProgram, programs);
    const hash = createHash("sha256");
    let archiveBytes = 0;
    // Once tar or the decompressor has given up, the rest is only hashed: whether the
    // archive is damaged or merely invalid is known only at its end.
    let feeding = true;
    for await (const chunk of source) {
      signal?.throwIfAborted();
      hash.update(chunk);
      archiveBytes += chunk.byteLength;
      if (feeding) feeding = await writeIfOpen(input, chunk);
    }
    input.end();
    const [tarExit, decompressorFailure] = await Promise.all([tar.exited, failure]);
    signal?.throwIfAborted();

    const sha256 = hash.digest("hex");
    if (sha256 !== options.expectedSha256.toLowerCase()) {
      throw new ArchiveIntegrityError(
        `the archive's SHA-256 is ${sha256}, not the expected ${options.expectedSha256.toLowerCase()}`,
      );
    }
    if (options.expectedBytes !== undefined && archiveBytes !== options.expectedBytes) {
      throw new ArchiveIntegrityError(
        `the archive has ${archiveBytes} bytes, not the expected ${options.expectedBytes}`,
      );
    }
    const problems = [
      tarExit.code === 0 ? undefined : tar.describe(tarExit),
      decompressorFailure && `${options.compression} data: ${decompressorFailure}`,
    ].filter(Boolean);
    if (problems.length > 0) throw new InvalidArchiveError(`the archive cannot be unpacked: ${problems.join("; ")}`);
    if (tar.flagged) {
      throw new InvalidArchiveError(`the archive has entries that would land outside the directory (${tar.flagged})`);
    }
    const counts = emptyCounts();
    await walkTree(target, (entry) => {
      if (!archivedKinds.has(entry.kind)) {
        throw new InvalidArchiveError(
          `the archive holds ${JSON.stringify(entry.path.toString())}, which is not a file, a directory or a symlink`,
        );
      }
      addToCounts(counts, entry);
    });
    return { ...counts, archiveBytes, sha256 };
  } catch (error) {
    throw signal?.aborted ? signal.reason : error;
  } finally {
    signal?.removeEventListener("abort", killAll);
    killAll();
    await Promise.all(programs.map((program) => program.exited));
  }
}

interface Unpacking {
  /** Where the compressed archive goes. */
  input: Writable;
  tar: Program;
  /** Resolves with why decompressing failed, or undefined once it has finished cleanly. */
  failure: Promise<string | undefined>;
}

function startUnpacking(
  target: string,
  compression: ArchiveCompression,
  zstdProgram: boolean,
  programs: Program[],
): Unpacking {
  const args = [
    "--extract",
    "--file=-",
    `--directory=${target}`,
    "--no-same-owner",
    "--same-permissions",
    "--delay-directory-restore",
  ];
  if (zstdProgram) {
    // zstd writes into tar's standard input directly; Node only feeds the compressed bytes.
    const zstd = new Program("zstd", ["-d", "-q", "-c"], ["pipe", "pipe", "pipe"]);
    programs.push(zstd);
    const zstdOutput = zstd.child.stdout as Readable;
    const tar = new Program("tar", args, [zstdOutput, "ignore", "pipe"], rewrittenNames);
    programs.push(tar);
    zstdOutput.destroy();
    return { input: quiet(zstd.child.stdin as Writable), tar, failure: failureOf(zstd) };
  }
  const tar = new Program("tar", args, ["pipe", "ignore", "pipe"], rewrittenNames);
  programs.push(tar);
  const tarInput = quiet(tar.child.stdin as Writable);
  if (compression === "none") return { input: tarInput, tar, failure: Promise.resolve(undefined) };
  const transform =
    compression === "gzip"
      ? createGunzip({ chunkSize: maxChunkBytes })
      : createZstdDecompress({ chunkSize: maxChunkBytes });
  return { input: quiet(transform), tar, failure: pipeZlib(transform, tarInput, transform) };
}

async function usesZstdProgram(backend: ZstdBackend = "auto"): Promise<boolean> {
  return backend === "program" || (backend === "auto" && (await hasZstdProgram()));
}

/** Resolves with why `program` failed, or undefined once it has exited with status 0. */
async function failureOf(program: Program): Promise<string | undefined> {
  const exit = await program.exited;
  return exit.code === 0 ? undefined : program.describe(exit);
}

/**
 * Pipes `from` into `to`, one of which is `zlibStream`, and resolves once the pipe has ended
 * with the error zlib reported, if any. A broken pipe is not zlib's failure but that of the
 * program at the other end, which reports it itself.
 */
function pipeZlib(from: Readable, to: Writable, zlibStream: Transform): Promise<string | undefined> {
  let zlibError: Error | undefined;
  zlibStream.on("error", (error: NodeJS.ErrnoException) => {
    if (String(error.code).startsWith("Z")) zlibError ??= error;
  });
  return new Promise((resolve) => pipeline(from, to, () => resolve(zlibError?.message)));
}

/** Keeps a stream's errors from crashing the process: the pipeline's outcome tells what went wrong. */
function quiet<S extends Writable>(stream: S): S {
  stream.on("error", () => {});
  return stream;
}

/** Writes `data` as {@link writeTo} does; resolves false instead of rejecting when the stream has closed. */
function writeIfOpen(stream: Writable, data: Uint8Array): Promise<boolean> {
  return writeTo(stream, data).then(
    () => true,
    () => false,
  );
}

/** The program at the other end of a pipe has gone. */
class PipeClosedError extends Error {
  override name = "PipeClosedError";
}

/** Writes `data`, resolving once the stream takes more; rejects when the stream has closed. */
function writeTo(stream: Writable, data: Uint8Array): Promise<void> {
  if (stream.destroyed || stream.writableEnded) return Promise.reject(new PipeClosedError("the pipe is closed"));
  if (stream.write(data)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const settle = (error?: Error) => {
      stream.off("drain", onDrain);
      stream.off("close", onClose);
      if (error) reject(error);
      else resolve();
    };
    const onDrain = () => settle();
    const onClose = () => settle(new PipeClosedError("the pipe is closed"));
    stream.on("drain", onDrain);
    stream.on("close", onClose);
  });
}

/** Regroups a stream's buffers into chunks of exactly `size` bytes (the last one may be shorter). */
async function* inChunks(source: AsyncIterable<Buffer>, size: number): AsyncGenerator<Uint8Array> {
  let parts: Buffer[] = [];
  let held = 0;
  for await (let buffer of source) {
    // Whole chunks of a buffer go out as views of it: pipes deliver reads of exactly `size`.
    while (held === 0 && buffer.length >= size) {
      yield buffer.subarray(0, size);
      buffer = buffer.subarray(size);
    }
    while (held + buffer.length >= size) {
      const take = size - held;
      parts.push(buffer.subarray(0, take));
      yield Buffer.concat(parts, size);
      parts = [];
      held = 0;
      buffer = buffer.subarray(take);
    }
    if (buffer.length > 0) {
      parts.push(buffer);
      held += buffer.length;
    }
  }
  if (held > 0) yield Buffer.concat(parts, held);
}

/** The kinds of entries an archive holds. */
const archivedKinds: ReadonlySet<EntryKind> = new Set(["file", "directory", "symlink"]);

/** Why an entry met by the walk must be left out of the archive, if it must. */
function skipReasonOf(entry: TreeEntry): SkipReason | undefined {
  if (entry.kind === "fifo" || entry.kind === "socket" || entry.kind === "device") return entry.kind;
  return entry.unreadable ? "unreadable" : undefined;
}

type Counts = Omit<ArchiveTotals, "archiveBytes" | "sha256">;

function emptyCounts(): Counts {
  return { fileCount: 0, directoryCount: 0, symlinkCount: 0, contentBytes: 0 };
}

function addToCounts(counts: Counts, entry: TreeEntry): void {
  if (entry.kind === "file") {
    counts.fileCount++;
    counts.contentBytes += entry.size;
  } else if (entry.kind === "directory") {
    counts.directoryCount++;
  } else if (entry.kind === "symlink") {
    counts.symlinkCount++;
  }
}
