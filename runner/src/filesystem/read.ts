import { type BigIntStats, constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  type Entry,
  type ReadFileRequest,
  type ReadFileResponse,
  ReadFileResponseSchema,
} from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { entryFromStats } from "./entry.js";
import { errnoOf, pathError, toConnectError } from "./errors.js";
import type { Resolver } from "./resolver.js";

/** The most ReadFile returns in one call, in bytes (4 MiB); larger reads use Download. */
const maxReadBytes = 4 * 1024 * 1024;

// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
const readFlags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** A regular file of the workspace, open for reading. */
export interface OpenedFile {
  handle: FileHandle;
  /** The file when it was opened (from the descriptor). */
  stats: BigIntStats;
  /** The file's entry (its canonical path, following a symlink at the requested path). */
  entry: Entry;
}

/**
 * Opens a regular file for reading, following a symlink at the path only to a target
 * inside the workspace. The file is opened with O_NOFOLLOW through its directory's
 * descriptor and checked with fstat, so what is read is what was checked.
 */
export async function openForRead(resolver: Resolver, path: string): Promise<OpenedFile> {
  return resolver.with(path, { follow: true }, async (located) => {
    if (!located.stats) throw pathError(Code.NotFound, path, "does not exist");
    if (located.stats.isDirectory()) throw pathError(Code.FailedPrecondition, path, "is a directory, not a file");
    let handle: FileHandle;
    try {
      handle = await open(located.path, readFlags);
    } catch (error) {
      if (errnoOf(error) === "ELOOP") {
        throw pathError(Code.Aborted, path, "was replaced by a symlink while it was being opened; try again", error);
      }
      throw toConnectError(error, path);
    }
    try {
      const stats = await handle.stat({ bigint: true });
      if (!stats.isFile()) throw pathError(Code.FailedPrecondition, path, "is not a regular file");
      return { handle, stats, entry: entryFromStats(located.rel, located.name, stats) };
    } catch (error) {
      await handle.close();
      throw toConnectError(error, path);
    }
  });
}

/**
 * Whether a file's content changed between two fstat calls on the same descriptor. The
 * status-change time is not compared: it also moves when the file is renamed over or
 * unlinked (an atomic replace of the path), and the bytes behind the descriptor are then
 * still the old ones.
 */
export function changedSince(before: BigIntStats, after: BigIntStats): boolean {
  return before.size !== after.size || before.mtimeNs !== after.mtimeNs;
}

/** Fills `buffer` from `position`, stopping early only at the end of the file; returns the bytes read. */
export async function readFully(handle: FileHandle, buffer: Uint8Array, position: bigint): Promise<number> {
  let filled = 0;
  while (filled < buffer.byteLength) {
    const { bytesRead } = await handle.read(buffer, filled, buffer.byteLength - filled, position + BigInt(filled));
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}

/** Attempts to read a range consistently before a file that keeps changing fails with ABORTED. */
const readAttempts = 3;

/**
 * ReadFile: reads a range (at most 4 MiB) so that the content and the version belong
 * together: the file is stat'ed before and after the read through the same descriptor, and
 * a file changed in between is read again. Without a length, what is left after the offset
 * must fit in 4 MiB (so a large file can be read in ranges from any offset).
 */
export async function readFileRange(resolver: Resolver, req: ReadFileRequest): Promise<ReadFileResponse> {
  const { handle, stats: opened, entry } = await openForRead(resolver, req.path);
  try {
    let before = opened;
    for (let attempt = 1; ; attempt++) {
      const size = before.size;
      if (req.offset > size) {
        throw pathError(Code.OutOfRange, req.path, `has ${size} bytes; offset ${req.offset} is beyond its end`);
      }
      const remaining = size - req.offset;
      if (req.lengthBytes === 0n && remaining > BigInt(maxReadBytes)) {
        throw pathError(
          Code.FailedPrecondition,
          req.path,
          `has ${remaining} bytes to read, more than ${maxReadBytes}: read a range or use Download`,
        );
      }
      const wanted = req.lengthBytes === 0n || req.lengthBytes > remaining ? remaining : req.lengthBytes;
      const content = new Uint8Array(Number(wanted));
      const read = await readFully(handle, content, req.offset);
      const after = await handle.stat({ bigint: true });
      if (changedSince(before, after) || read !== content.byteLength) {
        if (attempt >= readAttempts) throw pathError(Code.Aborted, req.path, "kept changing while it was being read");
        before = after;
        continue;
      }
      const current = entryFromStats(entry.path, entry.name, after);
      return create(ReadFileResponseSchema, {
        content,
        entry: current,
        offset: req.offset,
        eof: req.offset + BigInt(read) >= after.size,
      });
    }
  } finally {
    await handle.close();
  }
}
