/** A piece of one output stream, as the process wrote it. */
export interface OutputChunk {
  /**
   * The order of this chunk among all chunks of the process (stdout and stderr together), so
   * that a replay interleaves the two streams as they were produced.
   */
  seq: number;
  /** The offset of the chunk's first byte within its stream. */
  offset: number;
  data: Buffer;
}

/**
 * The most recent output of one stream of a process, addressed by absolute byte offsets (byte N
 * keeps offset N for the life of the process). Chunks are kept as they arrived instead of in a
 * preallocated ring, so a quiet process costs nothing and a chatty one at most `capacity` bytes
 * (plus the unused part of one pipe read).
 */
export class OutputBuffer {
  private chunks: OutputChunk[] = [];
  /** The index of the oldest chunk still kept; the array is compacted now and then. */
  private head = 0;
  private retained = 0;
  private total = 0;

  /** @param capacity the bytes kept; older output is dropped first */
  constructor(readonly capacity: number) {}

  /** The offset one past the last byte written: the stream's total output so far. */
  get end(): number {
    return this.total;
  }

  /** The offset of the oldest byte still kept; greater than 0 once output has been dropped. */
  get start(): number {
    return this.total - this.retained;
  }

  /** The bytes kept right now; never more than {@link capacity}. */
  get retainedBytes(): number {
    return this.retained;
  }

  /** Appends output and returns it as a chunk (whole, even if the buffer keeps only its tail). */
  append(data: Buffer, seq: number): OutputChunk {
    const chunk: OutputChunk = { seq, offset: this.total, data };
    this.chunks.push(chunk);
    this.total += data.length;
    this.retained += data.length;
    this.trim();
    return chunk;
  }

  /**
   * The retained output from `offset` (between {@link start} and {@link end}) to the end of
   * the chunk holding it, or undefined at the end of the stream.
   */
  read(offset: number): OutputChunk | undefined {
    if (offset < this.start || offset > this.total) {
      throw new RangeError(`offset ${offset} is outside ${this.start}..${this.total}`);
    }
    if (offset === this.total) return undefined;
    let low = this.head;
    let high = this.chunks.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >>> 1;
      if ((this.chunks[middle] as OutputChunk).offset <= offset) low = middle;
      else high = middle - 1;
    }
    const chunk = this.chunks[low] as OutputChunk;
    if (chunk.offset === offset) return chunk;
    return { seq: chunk.seq, offset, data: chunk.data.subarray(offset - chunk.offset) };
  }

  /** Everything retained, as one buffer. */
  contents(): Buffer {
    return Buffer.concat(this.chunks.slice(this.head).map((chunk) => chunk.data));
  }

  private trim(): void {
    while (this.retained > this.capacity) {
      const oldest = this.chunks[this.head] as OutputChunk;
      const excess = this.retained - this.capacity;
      if (oldest.data.length <= excess) {
        this.chunks[this.head] = undefined as unknown as OutputChunk;
        this.head++;
        this.retained -= oldest.data.length;
      } else {
        // A new object, not a mutation: the chunk may still be on its way to a live client.
        this.chunks[this.head] = {
          seq: oldest.seq,
          offset: oldest.offset + excess,
          data: oldest.data.subarray(excess),
        };
        this.retained -= excess;
      }
    }
    if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }
}
