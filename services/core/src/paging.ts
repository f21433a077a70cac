import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";

/** The page size used when a request says 0. */
export const defaultPageSize = 50;

/** A page size: 0 means {@link defaultPageSize}. */
export function pageSizeOf(requested: number): number {
  return requested === 0 ? defaultPageSize : requested;
}

/**
 * An opaque page token: where the listing continues (the key of the last item returned),
 * bound to the filters it was issued for, so a token reused with other filters is refused
 * rather than silently skipping items.
 */
export function encodePageToken(after: string, filters: unknown = {}): string {
  return Buffer.from(JSON.stringify({ a: after, f: fingerprint(filters) })).toString("base64url");
}

/**
 * Where a page token from {@link encodePageToken} continues; undefined for an empty token.
 * InvalidArgument naming page_token for anything core did not issue for these filters.
 */
export function decodePageToken(token: string, filters: unknown = {}): string | undefined {
  if (token === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    parsed = undefined;
  }
  const { a, f } = (parsed ?? {}) as { a?: unknown; f?: unknown };
  if (typeof a !== "string" || typeof f !== "string") {
    throw new ConnectError("page_token: not a token this server issued", Code.InvalidArgument);
  }
  if (f !== fingerprint(filters)) {
    throw new ConnectError("page_token: issued for other filters; repeat the same filters", Code.InvalidArgument);
  }
  return a;
}

function fingerprint(filters: unknown): string {
  return createHash("sha256").update(JSON.stringify(filters)).digest("base64url").slice(0, 16);
}

/** One page of keys, and the token for the next (empty on the last page). */
export interface Page {
  items: string[];
  nextPageToken: string;
}

/**
 * Pages through keys in byte order: the token is the last key returned, so items added or
 * removed between calls never make a page skip or repeat the others.
 */
export function pageOf(
  sortedKeys: readonly string[],
  pageSize: number,
  pageToken: string,
  filters: unknown = {},
): Page {
  const after = decodePageToken(pageToken, filters);
  const size = pageSizeOf(pageSize);
  const rest = after === undefined ? sortedKeys : sortedKeys.filter((key) => key > after);
  const items = rest.slice(0, size);
  const last = items.at(-1);
  return { items, nextPageToken: rest.length > size && last !== undefined ? encodePageToken(last, filters) : "" };
}
