import { constants } from "node:os";
import { Code, ConnectError } from "@connectrpc/connect";
import * as pty from "node-pty";
import type { Activity } from "../activity.js";
import { Backpressure } from "./backpressure.js";
import { hasForegroundJob } from "./foreground.js";
import { InputSequencer } from "./input-order.js";
import { PtyWriter } from "./pty-writer.js";
import { ScreenModel } from "./screen.js";
import { Scrollback } from "./scrollback.js";

/** How a session's program ended. */
export interface SessionExit {
  exitCode?: number;
  /** The signal name (`SIGHUP`) if a signal ended it. */
  signal?: string;
  at: Date;
  /** The output offset at exit: every byte of output comes before it. */
  offset: number;
  /** Why it ended: `exited` (by itself), `closed`, `detached lifetime elapsed` or `runner shutdown`. */
  reason: string;
}

/** What a new session runs and how. */
export interface SessionSpec {
  id: string;
  label: string;
  /** argv; the first element is looked up in PATH. */
  command: string[];
  /** What is spawned to run `command`: `command` itself, or the cgroup shim that execs it. */
  spawnCommand: string[];
  /** The working directory, already confined to the workspace. */
  cwd: string;
  /** The same directory relative to the workspace root ("." for the root), for display. */
  relativeCwd: string;
  env: Record<string, string>;
  cols: number;
  rows: number;
  /** How long the session lives with no client attached and not busy, in ms. */
  detachedLifetimeMs: number;
}

/** How often a detached session past its lifetime is checked again while it stays busy, at most, in ms. */
const busyRecheckMs = 30_000;

/** Runner-wide settings and hooks a session needs. */
export interface SessionEnvironment {
  scrollbackBytes: number;
  activity: Activity;
  /** Called once when the program has exited. */
  onExit(session: TerminalSession): void;
  /** Called when the session has had no client for its detached lifetime. */
  onDetachedTooLong(session: TerminalSession): void;
}

/**
 * One PTY session: the program, the scrollback of its output, a model of its screen, and
 * the clients attached to it. Output is appended to the scrollback and each client reads
 * it at its own pace from its own offset, so every client sees the bytes in order; while
 * every client is behind, the PTY is not read ({@link Backpressure}), so a sole client never
 * misses a byte and a slow client never holds up a faster one.
 */
export class TerminalSession {
  readonly id: string;
  readonly label: string;
  readonly command: string[];
  readonly cwd: string;
  readonly relativeCwd: string;
  readonly createdAt = new Date();
  readonly detachedLifetimeMs: number;
  readonly scrollback: Scrollback;
  readonly screen: ScreenModel;
  readonly input: InputSequencer;
  /** Pauses the PTY while every attached client is behind; clients report their positions to it. */
  readonly backpressure: Backpressure;
  cols: number;
  rows: number;
  /** The last input or output, in ms since the epoch. */
  lastActivityMs = Date.now();
  exit: SessionExit | undefined;
  /** Bumped on every resize, so clients can tell they have a resize to report. */
  resizeCount = 0;
  private clients = 0;
  private lastDetachAt = Date.now();
  /** When a detached session was last found busy at the end of its lifetime, in ms since the epoch. */
  private lastBusyAt = 0;
  private readonly pty: pty.IPty;
  /** Writes input without node-pty's thread-pool hop; absent if node-pty exposes no fd. */
  private readonly writer: PtyWriter | undefined;
  private readonly watchers = new Set<() => void>();
  private detachTimer: NodeJS.Timeout | undefined;
  // What `close` sets; a program that ends by itself has "exited", as SessionExited.reason says.
  private exitReason = "exited";
  private readonly exited: Promise<void>;

  constructor(
    spec: SessionSpec,
    private readonly env: SessionEnvironment,
  ) {
    this.id = spec.id;
    this.label = spec.label;
    this.command = spec.command;
    this.cwd = spec.cwd;
    this.relativeCwd = spec.relativeCwd;
    this.cols = spec.cols;
    this.rows = spec.rows;
    this.detachedLifetimeMs = spec.detachedLifetimeMs;
    this.scrollback = new Scrollback(env.scrollbackBytes);
    this.screen = new ScreenModel(this.scrollback, spec.cols, spec.rows);
    this.input = new InputSequencer((data) => this.write(data), { waitMs: 10_000, maxClients: 1024 });
    const [file, ...args] = spec.spawnCommand as [string, ...string[]];
    this.pty = pty.spawn(file, args, {
      name: "xterm-256color",
      cols: spec.cols,
      rows: spec.rows,
      cwd: spec.cwd,
      env: spec.env,
      encoding: null,
    });
    this.writer = directWriter(this.pty);
    this.backpressure = new Backpressure(this.scrollback, this.pty, () => !processExists(this.pty.pid));
    this.pty.onData((data) => this.onOutput(data as unknown as Buffer));
    this.exited = new Promise((resolve) => {
      this.pty.onExit(({ exitCode, signal }) => {
        this.exit = {
          exitCode: signal ? undefined : exitCode,
          signal: signal ? signalName(signal) : undefined,
          at: new Date(),
          offset: this.scrollback.end,
          reason: this.exitReason,
        };
        clearTimeout(this.detachTimer);
        this.backpressure.release();
        this.writer?.close();
        this.input.close(new ConnectError(`session "${this.id}" has exited`, Code.FailedPrecondition));
        this.wake();
        env.onExit(this);
        resolve();
      });
    });
    this.armDetachTimer();
  }

  /** The process id of the program. */
  get pid(): number {
    return this.pty.pid;
  }

  /** Clients attached right now. */
  get attachedClients(): number {
    return this.clients;
  }

  /** When the session will be closed for having no client, if no client attaches first and it is not busy then. */
  get expiresAt(): Date | undefined {
    if (this.exit || this.clients > 0) return undefined;
    return new Date(Math.max(this.lastDetachAt, this.lastBusyAt) + this.detachedLifetimeMs);
  }

  /**
   * Whether the program has handed the terminal to a command it runs in the foreground (see
   * {@link hasForegroundJob}): a shell running a build, a server or an editor, with or without a
   * client. False at the prompt, and once the program has exited.
   */
  async busy(): Promise<boolean> {
    return !this.exit && (await hasForegroundJob(this.pty.pid));
  }

  private onOutput(data: Buffer): void {
    this.scrollback.append(data);
    this.backpressure.onOutput();
    this.screen.onOutput();
    this.lastActivityMs = Date.now();
    this.env.activity.touch();
    this.wake();
  }

  /** Writes input to the program, in the order of calls. */
  write(data: Uint8Array): void {
    if (this.exit) throw new ConnectError(`session "${this.id}" has exited`, Code.FailedPrecondition);
    if (this.writer) this.writer.write(data);
    else this.pty.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    this.lastActivityMs = Date.now();
    this.env.activity.touch();
  }

  /** Sets the terminal size; every client is told through {@link resizeCount}. */
  resize(cols: number, rows: number): void {
    if (this.exit) throw new ConnectError(`session "${this.id}" has exited`, Code.FailedPrecondition);
    if (cols === this.cols && rows === this.rows) return;
    this.pty.resize(cols, rows);
    this.cols = cols;
    this.rows = rows;
    this.screen.noteResize(this.scrollback.end, cols, rows);
    this.resizeCount++;
    this.wake();
  }

  /** Counts a client as attached until the returned function is called. */
  attach(): () => void {
    this.clients++;
    clearTimeout(this.detachTimer);
    const detachActivity = this.env.activity.attach();
    let detached = false;
    return () => {
      if (detached) return;
      detached = true;
      this.clients--;
      detachActivity();
      if (this.clients === 0) {
        this.lastDetachAt = Date.now();
        this.armDetachTimer();
      }
    };
  }

  private armDetachTimer(delayMs = this.detachedLifetimeMs): void {
    if (this.exit || this.clients > 0) return;
    clearTimeout(this.detachTimer);
    this.detachTimer = setTimeout(() => void this.detachedLifetimeOver(), delayMs);
    this.detachTimer.unref();
  }

  /**
   * The detached lifetime is over, unless the session is busy: a detached shell is not closed
   * under a build that outlasts the lifetime. A busy session is checked again later, and its
   * lifetime then counts from the last time it was found busy.
   */
  private async detachedLifetimeOver(): Promise<void> {
    const busy = await this.busy();
    // A client may have attached, or the program exited, meanwhile.
    if (this.exit || this.clients > 0) return;
    if (busy) {
      this.lastBusyAt = Date.now();
      this.armDetachTimer(Math.min(this.detachedLifetimeMs, busyRecheckMs));
      return;
    }
    const leftMs = Math.max(this.lastDetachAt, this.lastBusyAt) + this.detachedLifetimeMs - Date.now();
    if (leftMs > 0) this.armDetachTimer(leftMs);
    else this.env.onDetachedTooLong(this);
  }

  /**
   * Calls `listener` after every change (new output, a resize, the exit) until the returned
   * function is called. A client subscribes once for as long as it follows the session,
   * rather than once per wait, as it waits after nearly every keystroke.
   */
  watch(listener: () => void): () => void {
    this.watchers.add(listener);
    return () => this.watchers.delete(listener);
  }

  private wake(): void {
    // A watcher may unsubscribe while called; a Set's iteration allows that.
    for (const watcher of this.watchers) watcher();
  }

  /**
   * Ends the program: `signal` first (unless forced), SIGKILL after the grace period.
   * Resolves once it has exited.
   */
  async close(signal: NodeJS.Signals, graceMs: number, reason: string): Promise<{ killed: boolean }> {
    if (this.exit) return { killed: false };
    this.exitReason = reason;
    this.sendSignal(signal);
    if (signal === "SIGKILL") {
      await this.exited;
      return { killed: true };
    }
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      this.sendSignal("SIGKILL");
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
    return { killed };
  }

  /** Signals the session's process group (the shell and what it runs in the foreground). */
  private sendSignal(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.pty.pid, signal);
    } catch {
      try {
        this.pty.kill(signal);
      } catch {
        // already gone
      }
    }
  }

  /** Frees the screen model (after the session is removed). */
  dispose(): void {
    clearTimeout(this.detachTimer);
    this.backpressure.release();
    this.screen.dispose();
  }
}

/** The parts of node-pty's Unix terminal that are not in its typings. */
interface UnixPty {
  /** The PTY master. */
  fd?: unknown;
  /** `close`: node-pty closed the master (the program's side hung up). */
  on?(event: "close", listener: () => void): void;
}

/**
 * A writer straight to the PTY master; undefined where node-pty exposes none (then its own
 * write is used). It stops when node-pty reports the master closed, where node-pty's own
 * write stops, so input does not go on to a descriptor number that may be reused.
 */
function directWriter(term: pty.IPty): PtyWriter | undefined {
  const { fd, on } = term as pty.IPty & UnixPty;
  if (typeof fd !== "number" || typeof on !== "function") return undefined;
  const writer = new PtyWriter(fd);
  on.call(term, "close", () => writer.close());
  return writer;
}

/** Whether a process with this id exists (a zombie counts: node-pty reaps the program at once). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, under another user.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The name of a signal number (`SIGHUP` for 1). */
export function signalName(signal: number): string {
  for (const [name, value] of Object.entries(constants.signals)) if (value === signal) return name;
  return `SIG${signal}`;
}
