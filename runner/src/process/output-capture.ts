import { OutputBuffer } from "./output-buffer.js";

/** Which bytes an {@link OutputCapture} keeps once the output exceeds its limit. */
export type CaptureMode = "head" | "tail";

/**
 * Collects one stream of a process for RunProcess, keeping at most `limitBytes`: the first
 * bytes ("head") or the last ones ("tail"), so that a chatty command cannot make the
 * response, or the runner's memory, grow without bound.
 */
export class OutputCapture {
  private readonly head: Buffer[] = [];
  private headBytes = 0;
  private readonly tail: OutputBuffer | undefined;
  private total = 0;

  constructor(
    readonly limitBytes: number,
    readonly mode: CaptureMode,
  ) {
    if (mode === "tail") this.tail = new OutputBuffer(limitBytes);
  }

  /** Takes the next bytes of the stream. */
  add(data: Buffer): void {
    this.total += data.length;
    if (this.tail) {
      this.tail.append(data, 0);
      return;
    }
    const room = this.limitBytes - this.headBytes;
    if (room <= 0) return;
    // Copy a partial chunk so the rest of the pipe read it came from can be freed.
    const kept = data.length <= room ? data : Buffer.from(data.subarray(0, room));
    this.head.push(kept);
    this.headBytes += kept.length;
  }

  /** The bytes written in all, including any that were dropped. */
  get totalBytes(): number {
    return this.total;
  }

  /** Whether bytes were dropped. */
  get truncated(): boolean {
    return this.total > this.limitBytes;
  }

  /** The bytes kept. */
  bytes(): Buffer {
    return this.tail ? this.tail.contents() : Buffer.concat(this.head);
  }
}
