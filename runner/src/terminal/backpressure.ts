import type { Scrollback } from "./scrollback.js";

/** The part of a PTY that backpressure drives: whether its output is read. */
export interface PausableOutput {
  /** Stops reading the PTY master: once the kernel's buffer is full, the program blocks on write. */
  pause(): void;
  resume(): void;
}

/** One client's position in a session's output, from {@link Backpressure.track}. */
export interface ReaderPosition {
  /** The client has taken every byte before `offset` out of the scrollback (handed it to its stream). */
  advance(offset: number): void;
  /** The client has detached. */
  close(): void;
}

/** How often the program's exit is looked for while the PTY is paused, in ms. */
const exitPollMs = 25;

/**
 * Backpressure from a session's clients to its program, as a real terminal applies it: while every
 * attached client is behind, the PTY is not read, so the program blocks on write until one catches up.
 *
 * "Behind" is measured from the fastest client (the highest position), so a slow client never stalls
 * the others: with several clients the program runs at the pace of the fastest, and a slower one that
 * falls out of the scrollback is told what it skipped (`lagged`). A sole client is never skipped: the
 * PTY pauses once it is {@link pauseBytes} behind and resumes at {@link resumeBytes}, far inside the
 * scrollback. What can still arrive after a pause is bounded: the PTY read in progress (64 KiB) and, if
 * the program exits while paused, what it left in the kernel's buffer and the read stream's (together
 * under 160 KiB); an eighth of the scrollback (at least 256 KiB) leaves room for both. A session with
 * no client is never paused: its output goes to the scrollback as before.
 *
 * node-pty reports the exit only after it has read the master to its end, and gives up reading 200 ms
 * after the program ended; so the program's exit ends the backpressure (it is looked for before each
 * pause and every {@link exitPollMs} during one): the rest of the output is read and the exit follows
 * it, as without a pause.
 */
export class Backpressure {
  /** The PTY pauses when the fastest client is this many bytes behind the output. */
  readonly pauseBytes: number;
  /** ... and resumes when it is this many or fewer behind. */
  readonly resumeBytes: number;
  private readonly positions = new Set<{ offset: number }>();
  private paused = false;
  private released = false;
  private exitPoll: NodeJS.Timeout | undefined;

  constructor(
    private readonly scrollback: Scrollback,
    private readonly pty: PausableOutput,
    /** Whether the program has exited (its process is gone). */
    private readonly programGone: () => boolean,
  ) {
    this.pauseBytes = Math.floor(scrollback.capacity / 8);
    this.resumeBytes = Math.floor(scrollback.capacity / 16);
  }

  /** Whether the PTY is paused right now: no output comes until a client catches up. */
  get isPaused(): boolean {
    return this.paused;
  }

  /** Tracks a client that will send the output from `offset` on, until the returned position is closed. */
  track(offset: number): ReaderPosition {
    const position = { offset };
    this.positions.add(position);
    this.update();
    return {
      advance: (to) => {
        position.offset = to;
        this.update();
      },
      close: () => {
        if (this.positions.delete(position)) this.update();
      },
    };
  }

  /** To be called after output was appended to the scrollback. */
  onOutput(): void {
    if (!this.paused) this.update();
  }

  /** Ends backpressure for good (the program exited, the session is going away): the PTY is read to its end. */
  release(): void {
    this.released = true;
    this.update();
  }

  private update(): void {
    let lead = -1;
    for (const position of this.positions) lead = Math.max(lead, position.offset);
    const behind = lead < 0 ? 0 : this.scrollback.end - lead;
    if (this.paused && (this.released || behind <= this.resumeBytes)) {
      this.paused = false;
      clearInterval(this.exitPoll);
      this.pty.resume();
    } else if (!this.paused && !this.released && behind >= this.pauseBytes) {
      // Output after the program's end (what it left in the buffers) is read at once.
      if (this.programGone()) {
        this.released = true;
        return;
      }
      this.paused = true;
      this.pty.pause();
      this.exitPoll = setInterval(() => {
        if (this.programGone()) this.release();
      }, exitPollMs);
      this.exitPoll.unref();
    }
  }
}
