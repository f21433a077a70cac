/**
 * The workspace store: object storage for workspace snapshots and templates. Keys are
 * `/`-separated strings such as `repls/<repl id>/snapshots/<snapshot id>.tar.zst`; bodies are
 * streamed in and out, never held whole in memory. Drivers: a directory (filesystem) and S3.
 */

/** A body to store: a stream of chunks, or bytes already in memory. */
export type WorkspaceBody = AsyncIterable<Uint8Array> | Uint8Array;

/** Options for {@link WorkspaceStore.put}. */
export interface PutOptions {
  /** Aborting it stops the upload; nothing is stored and the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called with the total number of bytes stored so far, as the upload progresses. */
  onProgress?(bytes: number): void;
}

/** What {@link WorkspaceStore.put} stored. */
export interface PutResult {
  /** The size of the object in bytes. */
  bytes: number;
  /** The SHA-256 of the body, lowercase hex. */
  sha256: string;
}

/** Options for {@link WorkspaceStore.get}. */
export interface GetOptions {
  /** Aborting it ends the request and the returned stream. */
  signal?: AbortSignal;
}

/** The size and age of a stored object. */
export interface ObjectInfo {
  bytes: number;
  /** When the object was last written, in ms since the epoch. */
  modifiedAtMs: number;
}

/** A stored object in a listing. */
export interface ListedObject extends ObjectInfo {
  key: string;
}

/** Options for {@link WorkspaceStore.list}. */
export interface ListOptions {
  /** Only keys after this one (exclusive), in byte order: the `nextAfter` of the previous page. */
  after?: string;
  /** At most this many keys; 1 to 1,000, default 1,000. */
  limit?: number;
}

/** Options for {@link WorkspaceStore.abortUploads}. */
export interface AbortUploadsOptions {
  /**
   * Only uploads begun before this instant, in ms since the epoch; default: every one. The
   * filesystem driver goes by the last write of the upload's temporary file (a put in progress
   * keeps it fresh); S3 knows only when an upload began, so this must lie further back than the
   * longest put takes.
   */
  startedBeforeMs?: number;
}

/** A page of {@link WorkspaceStore.list}. */
export interface ListResult {
  /** In byte order of the keys (UTF-8). */
  keys: ListedObject[];
  /** Set when there may be more keys: pass it as `after` for the next page. */
  nextAfter?: string;
}

/** Object storage for workspace snapshots and templates. */
export interface WorkspaceStore {
  /** The driver's name, for logs (`filesystem`, `s3`). */
  readonly driver: string;
  /**
   * Stores `body` under `key`, replacing any object there. All or nothing: a reader sees the
   * old object (or none) until the new one is complete, and a failed or aborted put leaves
   * nothing behind. The SHA-256 is computed while streaming.
   */
  put(key: string, body: WorkspaceBody, options?: PutOptions): Promise<PutResult>;
  /** The object's bytes as a stream; throws {@link WorkspaceObjectNotFoundError} when there is none. */
  get(key: string, options?: GetOptions): Promise<AsyncIterable<Uint8Array>>;
  /** The object's size and age, or `undefined` when there is none. */
  stat(key: string): Promise<ObjectInfo | undefined>;
  /**
   * The keys starting with `prefix` (a plain string prefix: `repls/repl_a/` never matches
   * `repls/repl_ab/...`), in byte order, a page at a time.
   */
  list(prefix: string, options?: ListOptions): Promise<ListResult>;
  /** Deletes the object; deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  /**
   * Deletes every object under `prefix`, which must end with `/`, and every upload under it (see
   * {@link WorkspaceStore.abortUploads}: a put still running there fails); returns how many
   * objects were deleted.
   */
  deletePrefix(prefix: string): Promise<number>;
  /**
   * Removes the uploads under `prefix` (which must end with `/`) that were begun and never
   * completed: what a put cut short by a crash leaves behind (a temporary file, an S3 multipart
   * upload and its parts), which {@link WorkspaceStore.list} does not show. A put still running
   * whose upload is removed fails. Returns how many were removed.
   */
  abortUploads(prefix: string, options?: AbortUploadsOptions): Promise<number>;
  /** Whether the store answers; never throws. */
  ping(): Promise<boolean>;
  /** Releases connections; the store must not be used afterwards. */
  close(): Promise<void>;
}

/** Every object under `prefix`, in key order, a page at a time (a generator: the caller may stop early). */
export async function* listAll(store: Pick<WorkspaceStore, "list">, prefix: string): AsyncGenerator<ListedObject> {
  let after: string | undefined;
  do {
    const page = await store.list(prefix, after === undefined ? {} : { after });
    yield* page.keys;
    after = page.nextAfter;
  } while (after !== undefined);
}

/** Thrown by {@link WorkspaceStore.get} when no object has the key. */
export class WorkspaceObjectNotFoundError extends Error {
  override readonly name = "WorkspaceObjectNotFoundError";
  /** The key that was asked for. */
  readonly key: string;

  constructor(key: string, options?: ErrorOptions) {
    super(`no workspace object at ${JSON.stringify(key)}`, options);
    this.key = key;
  }
}

/**
 * The store is down, overloaded or timed out (network errors, 5xx answers, request
 * timeouts): the operation may succeed if tried again later. `cause` holds the original error.
 */
export class WorkspaceStoreUnavailableError extends Error {
  override readonly name = "WorkspaceStoreUnavailableError";
}

/** A key or prefix that the store refuses (see {@link validateWorkspaceKey}). */
export class InvalidWorkspaceKeyError extends Error {
  override readonly name = "InvalidWorkspaceKeyError";
  /** The refused key or prefix. */
  readonly key: string;

  constructor(key: string, reason: string) {
    super(`invalid workspace key ${JSON.stringify(key)}: ${reason}`);
    this.key = key;
  }
}

/** The longest key, in UTF-8 bytes. */
export const MAX_WORKSPACE_KEY_BYTES = 1024;

/**
 * Throws {@link InvalidWorkspaceKeyError} unless `key` is a valid key: not empty, at most
 * {@link MAX_WORKSPACE_KEY_BYTES} UTF-8 bytes, no NUL, no leading `/`, no empty, `.` or `..`
 * segments (so no trailing `/` either).
 */
export function validateWorkspaceKey(key: string): void {
  checkCommon(key);
  if (key.length === 0) throw new InvalidWorkspaceKeyError(key, "empty");
  for (const segment of key.split("/")) checkSegment(key, segment);
}

/**
 * Throws {@link InvalidWorkspaceKeyError} unless `prefix` can start a valid key: empty, or its
 * complete segments (those followed by `/`) are valid; the last, partial one may be anything
 * without NUL. With `directory`, the prefix must also be non-empty and end with `/`.
 */
export function validateWorkspacePrefix(prefix: string, directory = false): void {
  checkCommon(prefix);
  if (directory && !prefix.endsWith("/")) throw new InvalidWorkspaceKeyError(prefix, "a prefix must end with /");
  const segments = prefix.split("/");
  segments.pop();
  for (const segment of segments) checkSegment(prefix, segment);
}

function checkCommon(key: string): void {
  if (typeof key !== "string") throw new InvalidWorkspaceKeyError(String(key), "not a string");
  if (Buffer.byteLength(key, "utf8") > MAX_WORKSPACE_KEY_BYTES) {
    throw new InvalidWorkspaceKeyError(key, `longer than ${MAX_WORKSPACE_KEY_BYTES} bytes`);
  }
  if (key.includes("\0")) throw new InvalidWorkspaceKeyError(key, "contains NUL");
  if (key.startsWith("/")) throw new InvalidWorkspaceKeyError(key, "starts with /");
}

function checkSegment(key: string, segment: string): void {
  if (segment === "") throw new InvalidWorkspaceKeyError(key, "empty segment");
  if (segment === "." || segment === "..") throw new InvalidWorkspaceKeyError(key, `"${segment}" segment`);
}

/** Compares two keys in UTF-8 byte order, the order of every listing. */
export function compareWorkspaceKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** The page size of {@link WorkspaceStore.list} when no limit is given, and the largest allowed. */
export const MAX_LIST_LIMIT = 1000;

/** Checks a {@link ListOptions.limit} and applies the default. */
export function resolveListLimit(limit: number | undefined): number {
  if (limit === undefined) return MAX_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
    throw new RangeError(`list limit must be an integer from 1 to ${MAX_LIST_LIMIT}, got ${limit}`);
  }
  return limit;
}

/**
 * Iterates a body chunk by chunk, failing with the signal's reason as soon as it is aborted
 * (even while the source is waiting), and closing the source when the iteration stops early.
 */
export async function* readWorkspaceBody(body: WorkspaceBody, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  signal.throwIfAborted();
  if (body instanceof Uint8Array) {
    yield body;
    return;
  }
  const iterator = body[Symbol.asyncIterator]();
  let finished = false;
  try {
    while (true) {
      const result = await raceAbort(iterator.next(), signal);
      if (result.done) {
        finished = true;
        return;
      }
      if (!(result.value instanceof Uint8Array)) throw new TypeError("a workspace body must yield Uint8Array chunks");
      yield result.value;
      signal.throwIfAborted();
    }
  } finally {
    // Not awaited: a source stuck in `next()` would hold `return()` forever.
    if (!finished) Promise.resolve(iterator.return?.()).catch(() => {});
  }
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
