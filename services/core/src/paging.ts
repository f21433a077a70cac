import { Code, ConnectError } from "@connectrpc/connect";

/** The page size used when a request says 0. */
export const defaultPageSize = 100;

/** A page token: the key of the last item returned, opaque to callers (base64url). */
export function encodePageToken(lastKey: string): string {
  return Buffer.from(lastKey, "utf8").toString("base64url");
}

/** The key a page token stands for; InvalidArgument naming page_token for anything core did not issue. */
export function decodePageToken(token: string): string | undefined {
  if (!token) return undefined;
  const key = /^[A-Za-z0-9_-]{1,1024}$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  if (!key || encodePageToken(key) !== token) {
    throw new ConnectError("page_token: not a token this server issued", Code.InvalidArgument);
  }
  return key;
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
export function pageOf(sortedKeys: readonly string[], pageSize: number, pageToken: string): Page {
  const after = decodePageToken(pageToken);
  const size = pageSize || defaultPageSize;
  const rest = after === undefined ? sortedKeys : sortedKeys.filter((key) => key > after);
  const items = rest.slice(0, size);
  const last = items.at(-1);
  return { items, nextPageToken: rest.length > size && last !== undefined ? encodePageToken(last) : "" };
}
