import type { Terminal } from "@xterm/headless";
import { guardEmulator } from "./emulator-guard.js";
import { serializeScreen } from "./screen-serializer.js";
import type { Scrollback } from "./scrollback.js";

let emulator: typeof Terminal | undefined;

/**
 * Loads the terminal emulator. It is a large module, so a runner that never opens a
 * terminal never loads it; call this before creating the first {@link ScreenModel}.
 */
export async function loadEmulator(): Promise<void> {
  if (emulator) return;
  // CommonJS: loaders differ in whether the exports arrive named or as `default`.
  const headless = (await import("@xterm/headless")) as {
    Terminal?: typeof Terminal;
    default?: { Terminal?: typeof Terminal };
  };
  emulator = headless.Terminal ?? headless.default?.Terminal;
  if (!emulator) throw new Error("the terminal emulator module did not load");
}

/** A terminal's rendered state at one output offset. */
export interface ScreenState {
  /**
   * Bytes that, written to a fresh terminal of cols x rows, reproduce its state exactly (see
   * {@link serializeScreen}); written to a terminal in use, they reset it first.
   */
  data: Uint8Array;
  cols: number;
  rows: number;
  /** The output offset the state corresponds to: every byte before it is reflected. */
  offset: number;
}

/** The screen as text, for readers that do not run a terminal emulator. */
export interface ScreenText {
  lines: string[];
  scrollback: string[];
  cursorRow: number;
  cursorCol: number;
  cols: number;
  rows: number;
  alternateScreen: boolean;
  offset: number;
}

/** How long output must pause before the model catches up in the background, in ms. */
const quietMs = 30;
/** Minimum time between catch-ups forced by a growing backlog, in ms. */
const backlogIntervalMs = 250;

/**
 * A headless terminal (xterm.js) that interprets a session's output, so a client that
 * attaches while vim or top runs gets the screen, not a tail of escape sequences.
 *
 * Interpreting costs more CPU than relaying, so the model is lazy: it reads the session's
 * scrollback when output pauses, when its backlog passes a quarter of the scrollback (at
 * most four times a second, so steady output keeps it exact), and whenever a snapshot is
 * asked for. A flood outruns it on purpose: once what it missed has left the scrollback it
 * stops until output pauses, then restarts from the oldest retained byte, which the flood
 * has overwritten the screen with anyway.
 */
export class ScreenModel {
  private term: Terminal;
  private fedTo = 0;
  private cols: number;
  private rows: number;
  /** Resizes not yet applied to the model, in offset order. */
  private resizes: { offset: number; cols: number; rows: number }[] = [];
  private lock: Promise<unknown> = Promise.resolve();
  private readonly quietTimer: NodeJS.Timeout;
  private lastBacklogCatchUp = 0;
  private disposed = false;

  constructor(
    private readonly scrollback: Scrollback,
    cols: number,
    rows: number,
    private readonly scrollbackLines = 1000,
  ) {
    this.cols = cols;
    this.rows = rows;
    this.term = this.newTerminal(cols, rows);
    this.quietTimer = setTimeout(() => void this.catchUp(), quietMs);
    this.quietTimer.unref();
  }

  private newTerminal(cols: number, rows: number): Terminal {
    if (!emulator) throw new Error("loadEmulator() must be called before the first ScreenModel");
    const term = new emulator({ cols, rows, scrollback: this.scrollbackLines, allowProposedApi: true });
    guardEmulator(term);
    return term;
  }

  /** Tells the model the session was resized after the output up to `offset`. */
  noteResize(offset: number, cols: number, rows: number): void {
    this.resizes.push({ offset, cols, rows });
    this.onOutput();
  }

  /** Tells the model new output is in the scrollback. Cheap: it only schedules work. */
  onOutput(): void {
    if (this.disposed) return;
    this.quietTimer.refresh();
    const backlog = this.scrollback.end - this.fedTo;
    // Once the model has lost bytes it restarts from the scrollback anyway: wait for quiet.
    if (this.fedTo < this.scrollback.start) return;
    const now = Date.now();
    if (backlog > this.scrollback.capacity / 4 && now - this.lastBacklogCatchUp > backlogIntervalMs) {
      this.lastBacklogCatchUp = now;
      void this.catchUp();
    }
  }

  /** The rendered state as of now (after interpreting everything written so far). */
  snapshot(): Promise<ScreenState> {
    return this.exclusive(async () => {
      await this.feed();
      const text = serializeScreen(this.term);
      return { data: Buffer.from(text, "utf8"), cols: this.cols, rows: this.rows, offset: this.fedTo };
    });
  }

  /** The screen as text lines, with up to `scrollbackLines` lines of history above it. */
  text(scrollbackLines: number): Promise<ScreenText> {
    return this.exclusive(async () => {
      await this.feed();
      const buffer = this.term.buffer.active;
      // translateToString(true) drops the empty cells at the end of a line, not spaces a program
      // wrote there (a prompt's, a cleared line's): the two look the same, and GetScreen drops both.
      const lineAt = (y: number) => (buffer.getLine(y)?.translateToString(true) ?? "").replace(/ +$/, "");
      const lines: string[] = [];
      for (let y = buffer.baseY; y < buffer.baseY + this.rows; y++) lines.push(lineAt(y));
      const scrollback: string[] = [];
      for (let y = Math.max(0, buffer.baseY - scrollbackLines); y < buffer.baseY; y++) scrollback.push(lineAt(y));
      return {
        lines,
        scrollback,
        cursorRow: buffer.cursorY,
        cursorCol: buffer.cursorX,
        cols: this.cols,
        rows: this.rows,
        alternateScreen: buffer.type === "alternate",
        offset: this.fedTo,
      };
    });
  }

  /** Stops background work and frees the emulator. */
  dispose(): void {
    this.disposed = true;
    clearTimeout(this.quietTimer);
    void this.exclusive(async () => this.term.dispose());
  }

  private catchUp(): Promise<void> {
    if (this.disposed || this.fedTo === this.scrollback.end) return Promise.resolve();
    return this.exclusive(() => this.feed());
  }

  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.lock.then(task, task);
    this.lock = run.catch(() => {});
    return run;
  }

  /** Interprets the scrollback from where the model stopped up to its current end. */
  private async feed(): Promise<void> {
    if (this.disposed) return;
    const target = this.scrollback.end;
    if (this.fedTo < this.scrollback.start) this.restart(this.scrollback.start);
    while (this.fedTo < target) {
      const resize = this.resizes[0];
      const stop = resize && resize.offset <= target ? Math.max(resize.offset, this.fedTo) : target;
      if (stop > this.fedTo) {
        const data = this.scrollback.read(this.fedTo, stop - this.fedTo);
        await new Promise<void>((resolve) => this.term.write(data, resolve));
        this.fedTo = stop;
      }
      if (resize && resize.offset <= this.fedTo) {
        this.resizes.shift();
        this.applySize(resize.cols, resize.rows);
      }
    }
    while (this.resizes[0] && this.resizes[0].offset <= this.fedTo) {
      const resize = this.resizes.shift() as { cols: number; rows: number };
      this.applySize(resize.cols, resize.rows);
    }
  }

  private applySize(cols: number, rows: number): void {
    this.cols = cols;
    this.rows = rows;
    this.term.resize(cols, rows);
  }

  /** Starts over from `offset` with a fresh emulator at the size in force there. */
  private restart(offset: number): void {
    while (this.resizes[0] && this.resizes[0].offset <= offset) {
      const resize = this.resizes.shift() as { cols: number; rows: number };
      this.cols = resize.cols;
      this.rows = resize.rows;
    }
    this.term.dispose();
    this.term = this.newTerminal(this.cols, this.rows);
    this.fedTo = offset;
  }
}
