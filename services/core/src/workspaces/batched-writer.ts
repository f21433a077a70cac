/** The part of a FileHandle the writer uses. */
export interface WritableFile {
  writev(buffers: Uint8Array[]): Promise<{ bytesWritten: number }>;
  datasync(): Promise<void>;
}

/** Options for {@link BatchedWriter}. */
export interface BatchedWriterOptions {
  /** Chunks are gathered up to this many bytes, then written with one call. Default 1 MiB. */
  batchBytes?: number;
  /** A background flush to disk starts every this many bytes written. Default 16 MiB. */
  syncEveryBytes?: number;
}

/** At most this many buffers go to one writev (the system's limit is 1024). */
const maxBatchBuffers = 256;

/**
 * Writes a stream of chunks to a file in batches of about 1 MiB (one system call instead of
 * sixteen for 64 KiB chunks), and every 16 MiB starts flushing what was written to disk in
 * the background, so that the final fsync has only the tail left to write out.
 */
export class BatchedWriter {
  private batch: Uint8Array[] = [];
  private batchBytes = 0;
  private unsyncedBytes = 0;
  private syncing: Promise<void> | undefined;
  /**
   * A background flush's failure. It must be rethrown: Linux reports a writeback error to
   * one fsync per open file, so the final one would not see it again.
   */
  private syncError: unknown;
  private readonly maxBatchBytes: number;
  private readonly syncEveryBytes: number;

  constructor(
    private readonly handle: WritableFile,
    options: BatchedWriterOptions = {},
  ) {
    this.maxBatchBytes = options.batchBytes ?? 1024 * 1024;
    this.syncEveryBytes = options.syncEveryBytes ?? 16 * 1024 * 1024;
  }

  /** Takes a chunk (it must not change until written); rejects at once after a failed background flush. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.syncError !== undefined) throw this.syncError;
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes >= this.maxBatchBytes || this.batch.length >= maxBatchBuffers) {
      await this.writeBatch();
    }
  }

  /** Writes what is left and waits for the background flush; the caller then fsyncs. */
  async finish(): Promise<void> {
    await this.writeBatch();
    await this.syncing;
    if (this.syncError !== undefined) throw this.syncError;
  }

  private async writeBatch(): Promise<void> {
    const buffers = this.batch;
    const total = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    for (let written = 0; written < total; ) {
      written += (await this.handle.writev(remainderOf(buffers, written))).bytesWritten;
    }
    this.unsyncedBytes += total;
    if (this.unsyncedBytes >= this.syncEveryBytes && !this.syncing) {
      this.unsyncedBytes = 0;
      this.syncing = this.handle.datasync().then(
        () => {
          this.syncing = undefined;
        },
        (error: unknown) => {
          this.syncError ??= error;
          this.syncing = undefined;
        },
      );
    }
  }
}

/** The buffers after the first `skip` bytes of them. */
function remainderOf(buffers: Uint8Array[], skip: number): Uint8Array[] {
  if (skip === 0) return buffers;
  const rest: Uint8Array[] = [];
  for (const buffer of buffers) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
    skip = 0;
  }
  return rest;
}
