import { createHash } from "node:crypto";
import type { BigIntStats } from "node:fs";
import { readlink } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { type Entry, EntrySchema, EntryType } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import type { Located, Resolver } from "./resolver.js";

/** What kind of object a stat describes. */
function entryTypeOf(stats: BigIntStats): EntryType {
  if (stats.isFile()) return EntryType.FILE;
  if (stats.isDirectory()) return EntryType.DIRECTORY;
  if (stats.isSymbolicLink()) return EntryType.SYMLINK;
  return EntryType.OTHER;
}

/**
 * The version of a file's content: a digest of its device, inode, size, and modification
 * and status-change times (in nanoseconds).
 *
 * An editor needs a version that is cheap (Stat and ListDirectory report one for every
 * file, so hashing content is out) and that changes whenever the content does, so that a
 * conditional write never overwrites a change it has not seen. An atomic replace gives a new
 * inode; an in-place write moves mtime and ctime; a tool that puts mtime back (touch -d,
 * tar, rsync -t) still moves ctime, which no user can set. The one gap is two in-place writes
 * of the same size within one timestamp tick, which Linux 6.13 and later close on ext4, xfs,
 * btrfs and tmpfs by giving a file fine-grained timestamps once its times have been read.
 * The price is a version that also changes when only metadata does (chmod, a new hard
 * link): a conditional write then fails and the editor re-reads, which is safe.
 */
export function fileVersion(stats: BigIntStats): string {
  const key = `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}`;
  return createHash("sha256").update(key).digest("base64url").slice(0, 22);
}

/** The fields of an Entry that do not depend on following a symlink. */
export function entryFromStats(rel: string, name: string, stats: BigIntStats): Entry {
  const type = entryTypeOf(stats);
  return create(EntrySchema, {
    name,
    path: rel,
    type,
    sizeBytes: stats.size,
    mode: Number(stats.mode & 0o7777n),
    modifiedAt: { seconds: stats.mtimeNs / 1_000_000_000n, nanos: Number(stats.mtimeNs % 1_000_000_000n) },
    version: type === EntryType.FILE ? fileVersion(stats) : "",
  });
}

/**
 * Describes a located entry as Stat does, without following it; for a symlink also its
 * target text and what the target is (UNSPECIFIED when dangling, a loop, or outside).
 */
export async function describeEntry(resolver: Resolver, located: Located, stats: BigIntStats): Promise<Entry> {
  const entry = entryFromStats(located.rel, located.isRoot ? "." : located.name, stats);
  if (entry.type === EntryType.SYMLINK) {
    entry.symlinkTarget = await readlink(located.path);
    entry.symlinkTargetType = await targetTypeOf(resolver, located.rel);
  }
  return entry;
}

/** What a symlink at `rel` leads to, following further links; UNSPECIFIED if it leads nowhere allowed. */
export async function targetTypeOf(resolver: Resolver, rel: string): Promise<EntryType> {
  try {
    return await resolver.with(rel, { follow: true }, async (target) =>
      target.stats ? entryTypeOf(target.stats) : EntryType.UNSPECIFIED,
    );
  } catch {
    return EntryType.UNSPECIFIED;
  }
}
