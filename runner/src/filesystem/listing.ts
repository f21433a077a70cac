import { createHash, randomBytes } from "node:crypto";
import { lstat, readdir, readlink } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Entry,
  EntryType,
  type ListDirectoryRequest,
  type ListDirectoryResponse,
  ListDirectoryResponseSchema,
} from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { defaultPageSize } from "../pagination.js";
import { entryFromStats, targetTypeOf } from "./entry.js";
import { errnoOf, pathError, toConnectError } from "./errors.js";
import { joinRelative } from "./paths.js";
import { Directory, type Resolver } from "./resolver.js";

/** The longest page token the contract lets a client send back. */
const maxTokenLength = 1024;
/** Cursors too long for a token that are kept in memory, oldest dropped first. */
const maxStoredCursors = 10_000;

/** Orders names bytewise (UTF-8), as the contract says, not by UTF-16 code units. */
function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

interface Cursor {
  /** Which request the token belongs to. */
  fingerprint: string;
  /** The path of the last entry sent, relative to the listed directory, as names. */
  after: string[];
}

/**
 * Page tokens for ListDirectory. A token is a cursor, the last entry sent, so that entries
 * added or removed between pages neither repeat nor skip the others, and it carries a
 * fingerprint of the request so that a token from another request is refused. A cursor
 * that does not fit the contract's 1,024 characters (a very deep path) is kept here and
 * the token names it instead.
 */
export class PageTokens {
  private readonly stored = new Map<string, Cursor>();

  /** The token that continues after `cursor`. */
  encode(cursor: Cursor): string {
    const token = Buffer.from(JSON.stringify([cursor.fingerprint, cursor.after])).toString("base64url");
    if (token.length <= maxTokenLength) return token;
    const id = `~${randomBytes(16).toString("base64url")}`;
    this.stored.set(id, cursor);
    if (this.stored.size > maxStoredCursors) this.stored.delete(this.stored.keys().next().value as string);
    return id;
  }

  /** The cursor of a token; INVALID_ARGUMENT if it is not one of ours or belongs to another request. */
  decode(token: string, fingerprint: string): string[] {
    let cursor: Cursor | undefined = this.stored.get(token);
    if (!cursor && !token.startsWith("~")) {
      try {
        const [f, after] = JSON.parse(Buffer.from(token, "base64url").toString()) as unknown[];
        if (typeof f === "string" && Array.isArray(after) && after.every((n) => typeof n === "string" && n !== "")) {
          cursor = { fingerprint: f, after: after as string[] };
        }
      } catch {
        cursor = undefined;
      }
    }
    if (!cursor || cursor.fingerprint !== fingerprint || cursor.after.length === 0) {
      throw new ConnectError(
        "page_token is not a token of this request (same path, depth and include_hidden)",
        Code.InvalidArgument,
      );
    }
    return cursor.after;
  }
}

function fingerprintOf(rel: string, depth: number, includeHidden: boolean): string {
  return createHash("sha256")
    .update(JSON.stringify([rel, depth, includeHidden]))
    .digest("base64url")
    .slice(0, 16);
}

/**
 * ListDirectory: a pre-order walk of the directory to the requested depth, children in
 * bytewise name order, from the page token's cursor on. Subtrees that lie wholly before the
 * cursor are skipped without being read, so a page costs about what it returns. Symlinks
 * are listed (with what they point to) and never descended into; every directory is opened
 * with O_NOFOLLOW through its parent's descriptor.
 */
export async function listDirectory(
  resolver: Resolver,
  tokens: PageTokens,
  req: ListDirectoryRequest,
): Promise<ListDirectoryResponse> {
  const depth = req.depth || 1;
  const pageSize = req.pageSize || defaultPageSize;
  return resolver.with(req.path, { follow: true }, async (located) => {
    if (!located.stats) throw pathError(Code.NotFound, req.path, "does not exist");
    if (!located.stats.isDirectory()) throw pathError(Code.FailedPrecondition, req.path, "is not a directory");
    const fingerprint = fingerprintOf(located.rel, depth, req.includeHidden);
    const cursor = req.pageToken ? tokens.decode(req.pageToken, fingerprint) : undefined;
    const page: { entry: Entry; names: string[] }[] = [];
    const dir = await located.openDirectory();
    try {
      await walk(dir, located.rel, []);
    } finally {
      await dir.close();
    }
    const more = page.length > pageSize;
    if (more) page.length = pageSize;
    const last = page.at(-1);
    return create(ListDirectoryResponseSchema, {
      entries: page.map((p) => p.entry),
      nextPageToken: more && last ? tokens.encode({ fingerprint, after: last.names }) : "",
    });

    // Appends entries below `parent` (at `names` below the listed directory) until the page
    // has one entry more than asked for, which tells whether another page follows.
    async function walk(parent: Directory, parentRel: string, names: string[]): Promise<boolean> {
      const level = names.length;
      // Still on the cursor's path: skip what comes before it.
      const onCursor = cursor !== undefined && level < cursor.length && names.every((n, i) => n === cursor[i]);
      let children: string[];
      try {
        children = await readdir(parent.self);
      } catch (error) {
        if (errnoOf(error) === "ENOENT") return true;
        throw toConnectError(error, parentRel);
      }
      children = children.filter((n) => req.includeHidden || !n.startsWith(".")).sort(compareNames);
      for (const name of children) {
        let emit = true;
        if (onCursor && cursor) {
          const order = compareNames(name, cursor[level] as string);
          if (order < 0) continue;
          // The cursor's own entries were sent already; what is below them comes after.
          if (order === 0) emit = false;
        }
        const rel = joinRelative(parentRel, name);
        const stats = await lstat(parent.entry(name), { bigint: true }).catch((error: unknown) => {
          if (errnoOf(error) === "ENOENT") return undefined;
          throw toConnectError(error, rel);
        });
        if (!stats) continue;
        const path = [...names, name];
        if (emit) {
          const entry = entryFromStats(rel, name, stats);
          if (entry.type === EntryType.SYMLINK) {
            entry.symlinkTarget = await readlink(parent.entry(name)).catch(() => "");
            entry.symlinkTargetType = await targetTypeOf(resolver, rel);
          }
          page.push({ entry, names: path });
          if (page.length > pageSize) return false;
        }
        if (stats.isDirectory() && level + 1 < depth) {
          let child: Directory;
          try {
            child = await Directory.open(parent.entry(name));
          } catch (error) {
            // Gone or replaced since it was listed: list what is there now, without it.
            if (["ENOENT", "ELOOP", "ENOTDIR"].includes(errnoOf(error) ?? "")) continue;
            throw toConnectError(error, rel);
          }
          try {
            if (!(await walk(child, rel, path))) return false;
          } finally {
            await child.close();
          }
        }
      }
      return true;
    }
  });
}
