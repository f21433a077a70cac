import { create } from "@bufbuild/protobuf";
import { UploadRequestSchema } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { toFileEntry, toFsEvent } from "./convert.js";
import { DataLossError, NotFoundError } from "./errors.js";
import { allPages, type Context } from "./internal/context.js";
import type { RunnerConnection } from "./internal/runner-connection.js";
import type { CallOptions, FileEntry, Filesystem, FsEvent, UploadOptions } from "./types.js";

/** The most a unary read or write carries (the runner's limit); larger content streams. */
const unaryLimitBytes = 4 * 1024 * 1024;
/** The size of the chunks an upload sends. */
const uploadChunkBytes = 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A running repl's workspace files, over FilesystemService. */
export class FilesystemModule implements Filesystem {
  constructor(
    private readonly context: Context,
    private readonly runner: RunnerConnection,
  ) {}

  async read(path: string, options: { offset?: number; length?: number } & CallOptions = {}): Promise<Uint8Array> {
    const { content } = await this.runner.call(
      ({ files }, call) =>
        files.readFile({ path, offset: BigInt(options.offset ?? 0), lengthBytes: BigInt(options.length ?? 0) }, call),
      options.signal,
    );
    return content;
  }

  async readText(path: string, options: CallOptions = {}): Promise<string> {
    return decoder.decode(await this.read(path, options));
  }

  async write(
    path: string,
    data: string | Uint8Array,
    options: { mode?: number; createParents?: boolean; expectedVersion?: string } & CallOptions = {},
  ): Promise<FileEntry> {
    const content = typeof data === "string" ? encoder.encode(data) : data;
    if (content.length > unaryLimitBytes && options.expectedVersion === undefined) {
      return this.upload(path, content, options);
    }
    const { entry } = await this.runner.call(
      ({ files }, call) =>
        files.writeFile(
          {
            path,
            content,
            mode: options.mode ?? 0,
            createParents: options.createParents ?? false,
            condition:
              options.expectedVersion === undefined
                ? { case: undefined }
                : { case: "expectedVersion", value: options.expectedVersion },
          },
          call,
        ),
      options.signal,
    );
    return toFileEntry(entry);
  }

  list(path: string, options: { depth?: number; includeHidden?: boolean } & CallOptions = {}): Promise<FileEntry[]> {
    return this.runner.call(
      ({ files }, call) =>
        allPages(async (pageToken) => {
          const response = await files.listDirectory(
            {
              path,
              depth: options.depth ?? 1,
              includeHidden: options.includeHidden ?? false,
              pageToken,
              pageSize: 1000,
            },
            call,
          );
          return { items: response.entries.map(toFileEntry), next: response.nextPageToken };
        }),
      options.signal,
    );
  }

  async stat(path: string, options: CallOptions = {}): Promise<FileEntry> {
    const { entry } = await this.runner.call(({ files }, call) => files.stat({ path }, call), options.signal);
    return toFileEntry(entry);
  }

  async exists(path: string, options: CallOptions = {}): Promise<boolean> {
    try {
      await this.stat(path, options);
      return true;
    } catch (error) {
      if (error instanceof NotFoundError) return false;
      throw error;
    }
  }

  async remove(path: string, options: { recursive?: boolean } & CallOptions = {}): Promise<void> {
    await this.runner.call(
      ({ files }, call) => files.remove({ path, recursive: options.recursive ?? false }, call),
      options.signal,
    );
  }

  async move(from: string, to: string, options: { overwrite?: boolean } & CallOptions = {}): Promise<void> {
    await this.runner.call(
      ({ files }, call) =>
        files.move({ sourcePath: from, destinationPath: to, overwrite: options.overwrite ?? false }, call),
      options.signal,
    );
  }

  async copy(from: string, to: string, options: { overwrite?: boolean } & CallOptions = {}): Promise<void> {
    await this.runner.call(
      ({ files }, call) =>
        files.copy(
          { sourcePath: from, destinationPath: to, recursive: true, overwrite: options.overwrite ?? false },
          call,
        ),
      options.signal,
    );
  }

  async mkdir(path: string, options: { parents?: boolean; mode?: number } & CallOptions = {}): Promise<void> {
    await this.runner.call(
      ({ files }, call) =>
        files.makeDirectory({ path, parents: options.parents ?? false, mode: options.mode ?? 0 }, call),
      options.signal,
    );
  }

  async *watch(path: string, options: { recursive?: boolean } & CallOptions = {}): AsyncIterable<FsEvent> {
    const stop = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
    try {
      const { files } = await this.runner.clients(signal);
      for await (const message of files.watch({ path, recursive: options.recursive ?? false }, { signal })) {
        if (message.kind.case === "events") yield* message.kind.value.events.map(toFsEvent);
      }
    } catch (error) {
      if (options.signal?.aborted) return;
      throw this.context.error(error);
    } finally {
      stop.abort();
    }
  }

  async upload(
    path: string,
    source: Uint8Array | AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
    options: UploadOptions = {},
  ): Promise<FileEntry> {
    const { mode = 0, createParents = false, onProgress, signal } = options;
    const totalBytes = source instanceof Uint8Array ? source.length : undefined;
    if (!this.context.platform.fullDuplex) return this.uploadInParts(path, source, options);
    const checksum = source instanceof Uint8Array ? bytesToHex(sha256(source)) : "";
    async function* requests() {
      yield create(UploadRequestSchema, {
        kind: {
          case: "header",
          value: {
            path,
            mode,
            createParents,
            sha256: checksum,
            ...(totalBytes === undefined ? {} : { sizeBytes: BigInt(totalBytes) }),
          },
        },
      });
      let sent = 0;
      for await (const chunk of rechunk(source)) {
        yield create(UploadRequestSchema, { kind: { case: "chunk", value: chunk } });
        sent += chunk.length;
        onProgress?.(sent, totalBytes);
      }
    }
    // Not bounded by requestTimeoutMs: an upload takes as long as its size needs.
    const { entry } = await this.runner.call(({ files }, call) => files.upload(requests(), call), signal, undefined);
    return toFileEntry(entry);
  }

  /**
   * An upload without a streaming request body (browsers): parts of up to 4 MiB, the first written
   * and the rest appended (each against the version the previous part left, so none lands twice or
   * out of order) under a temporary name beside the target, which is then moved into place; on
   * failure the temporary file is removed.
   */
  private async uploadInParts(
    path: string,
    source: Uint8Array | AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
    options: UploadOptions,
  ): Promise<FileEntry> {
    const { mode = 0, createParents = false, onProgress, signal } = options;
    const totalBytes = source instanceof Uint8Array ? source.length : undefined;
    const slash = path.lastIndexOf("/");
    const temporary = `${path.slice(0, slash + 1)}.${path.slice(slash + 1)}.devex-upload-${crypto.randomUUID()}`;
    let version: string | undefined;
    let sent = 0;
    try {
      for await (const part of inParts(source, unaryLimitBytes)) {
        const { entry } = await this.runner.call(
          ({ files }, call) =>
            files.writeFile(
              version === undefined
                ? { path: temporary, content: part, mode, createParents }
                : {
                    path: temporary,
                    content: part,
                    append: true,
                    condition: { case: "expectedVersion", value: version },
                  },
              call,
            ),
          signal,
        );
        version = entry?.version ?? "";
        sent += part.length;
        onProgress?.(sent, totalBytes);
      }
      if (version === undefined) {
        // An empty source: an empty file.
        await this.runner.call(
          ({ files }, call) => files.writeFile({ path: temporary, mode, createParents }, call),
          signal,
        );
      }
      await this.move(temporary, path, { overwrite: true, ...(signal ? { signal } : {}) });
    } catch (error) {
      await this.remove(temporary).catch(() => {});
      throw error;
    }
    return this.stat(path, signal ? { signal } : {});
  }

  async *download(
    path: string,
    options: { onProgress?: (bytes: number, totalBytes: number) => void } & CallOptions = {},
  ): AsyncIterable<Uint8Array> {
    const stop = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
    let received = 0;
    let totalBytes = 0;
    // Checked against the runner's trailer, so a damaged or cut-short download never passes as whole.
    const hash = sha256.create();
    let verified = false;
    try {
      const { files } = await this.runner.clients(signal);
      for await (const message of files.download({ path }, { signal })) {
        if (message.kind.case === "header") totalBytes = Number(message.kind.value.lengthBytes);
        if (message.kind.case === "chunk") {
          received += message.kind.value.length;
          hash.update(message.kind.value);
          options.onProgress?.(received, totalBytes);
          yield message.kind.value;
        }
        if (message.kind.case === "trailer") {
          const actual = bytesToHex(hash.digest());
          if (actual !== message.kind.value.sha256 || received !== totalBytes) {
            throw new DataLossError(
              `the download of ${path} arrived damaged: ${received} of ${totalBytes} bytes, SHA-256 ${actual}, the runner sent ${message.kind.value.sha256}`,
            );
          }
          verified = true;
        }
      }
      if (!verified) throw new DataLossError(`the download of ${path} ended before its checksum: it is incomplete`);
    } catch (error) {
      if (error instanceof DataLossError) throw error;
      throw this.context.error(error, options.signal);
    } finally {
      stop.abort();
    }
  }
}

/** The source as parts of exactly `size` bytes (the last may be shorter), for uploads in parts. */
async function* inParts(
  source: Uint8Array | AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
  size: number,
): AsyncIterable<Uint8Array> {
  let held: Uint8Array[] = [];
  let heldBytes = 0;
  for await (const chunk of source instanceof Uint8Array ? [source] : iterate(source)) {
    let rest = chunk;
    while (heldBytes + rest.length >= size) {
      const take = size - heldBytes;
      held.push(rest.subarray(0, take));
      yield concat(held, size);
      held = [];
      heldBytes = 0;
      rest = rest.subarray(take);
    }
    if (rest.length > 0) {
      held.push(rest);
      heldBytes += rest.length;
    }
  }
  if (heldBytes > 0) yield concat(held, heldBytes);
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1 && parts[0]?.length === length) return parts[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** The source as chunks of at most uploadChunkBytes. */
async function* rechunk(
  source: Uint8Array | AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
): AsyncIterable<Uint8Array> {
  const chunks = source instanceof Uint8Array ? [source] : iterate(source);
  for await (const chunk of chunks) {
    for (let start = 0; start < chunk.length; start += uploadChunkBytes) {
      yield chunk.subarray(start, start + uploadChunkBytes);
    }
  }
}

/** A ReadableStream or async iterable as an async iterable (older browsers' streams are not iterable). */
async function* iterate(source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>): AsyncIterable<Uint8Array> {
  if (Symbol.asyncIterator in source) {
    yield* source as AsyncIterable<Uint8Array>;
    return;
  }
  const reader = (source as ReadableStream<Uint8Array>).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}
