import { create } from "@bufbuild/protobuf";
import { UploadRequestSchema } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { toFileEntry, toFsEvent } from "./convert.js";
import { DataLossError, FailedPreconditionError, NotFoundError } from "./errors.js";
import { allPages, type Context } from "./internal/context.js";
import type { RunnerConnection } from "./internal/runner-connection.js";
import type { CallOptions, FileEntry, Filesystem, FsEvent } from "./types.js";

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
    options: {
      mode?: number;
      createParents?: boolean;
      onProgress?: (bytes: number, totalBytes?: number) => void;
    } & CallOptions = {},
  ): Promise<FileEntry> {
    const { mode = 0, createParents = false, onProgress, signal } = options;
    const totalBytes = source instanceof Uint8Array ? source.length : undefined;
    if (!this.context.platform.fullDuplex) {
      // Browsers cannot stream a request body: the content goes in one WriteFile.
      const content = await collect(source);
      if (content.length > unaryLimitBytes) {
        throw new FailedPreconditionError("uploads over 4 MiB need a streaming transport (Node)");
      }
      const entry = await this.write(path, content, { mode, createParents, ...(signal ? { signal } : {}) });
      onProgress?.(content.length, content.length);
      return entry;
    }
    const sha256 = source instanceof Uint8Array ? await sha256Hex(source) : "";
    async function* requests() {
      yield create(UploadRequestSchema, {
        kind: {
          case: "header",
          value: {
            path,
            mode,
            createParents,
            sha256,
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

async function collect(
  source: Uint8Array | AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  if (source instanceof Uint8Array) return source;
  const chunks: Uint8Array[] = [];
  for await (const chunk of iterate(source)) chunks.push(chunk);
  const joined = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.length;
  }
  return joined;
}

/** The SHA-256 of the bytes as lowercase hex, with Web Crypto (Node and browsers alike). */
async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
