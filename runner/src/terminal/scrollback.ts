/**
 * The most recent output of a terminal session, addressed by absolute byte offsets: byte
 * N of the session's output keeps offset N for the life of the session, so a client can
 * say "everything after offset N" whatever was dropped since.
 */
export class Scrollback {
  private readonly ring: Buffer;
  private total = 0;

  /** @param capacity the bytes kept; older output is dropped first */
  constructor(readonly capacity: number) {
    this.ring = Buffer.allocUnsafe(capacity);
  }

  /** The offset one past the last byte written: the session's total output so far. */
  get end(): number {
    return this.total;
  }

  /** The offset of the oldest byte still kept. */
  get start(): number {
    return Math.max(0, this.total - this.capacity);
  }

  /** Appends output. */
  append(chunk: Uint8Array): void {
    let data = chunk;
    if (data.length >= this.capacity) {
      this.total += data.length - this.capacity;
      data = data.subarray(data.length - this.capacity);
    }
    const at = this.total % this.capacity;
    const first = Math.min(data.length, this.capacity - at);
    this.ring.set(data.subarray(0, first), at);
    if (first < data.length) this.ring.set(data.subarray(first), 0);
    this.total += data.length;
  }

  /**
   * Copies out up to `maxBytes` from `from` (which must be between {@link start} and
   * {@link end}); the copy stays valid whatever is appended later.
   */
  read(from: number, maxBytes: number): Uint8Array {
    if (from < this.start || from > this.total) {
      throw new RangeError(`offset ${from} is outside ${this.start}..${this.total}`);
    }
    const length = Math.min(maxBytes, this.total - from);
    const out = new Uint8Array(length);
    const at = from % this.capacity;
    const first = Math.min(length, this.capacity - at);
    out.set(this.ring.subarray(at, at + first), 0);
    if (first < length) out.set(this.ring.subarray(0, length - first), first);
    return out;
  }
}
