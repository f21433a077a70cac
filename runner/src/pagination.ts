import { Code, ConnectError } from "@connectrpc/connect";

/** The page size used when a request says 0. */
export const defaultPageSize = 100;

/** One page of a list, and the token for the next (empty on the last page). */
export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

/**
 * Pages through items ordered by a strictly increasing key (creation order): the token
 * is the key of the last item returned, so items added or removed between calls never
 * make a page skip or repeat the others.
 */
export function pageOf<T>(items: readonly T[], key: (item: T) => number, pageSize: number, pageToken: string): Page<T> {
  let after = -1;
  if (pageToken) {
    after = Number.parseInt(pageToken, 36);
    if (!/^[0-9a-z]{1,12}$/.test(pageToken) || !Number.isSafeInteger(after)) {
      throw new ConnectError(`page_token "${pageToken}" is not a token this runner issued`, Code.InvalidArgument);
    }
  }
  const size = pageSize || defaultPageSize;
  const rest = items.filter((item) => key(item) > after);
  const page = rest.slice(0, size);
  const last = page.at(-1);
  return {
    items: page,
    nextPageToken: rest.length > size && last !== undefined ? key(last).toString(36) : "",
  };
}
