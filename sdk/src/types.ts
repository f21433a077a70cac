import type { ConnectError, Interceptor } from "@connectrpc/connect";
import type { DevexError } from "./errors.js";
import type { Repl } from "./repl.js";

/** Options of a {@link Devex} client. Every duration is in milliseconds and says what it bounds. */
export interface DevexOptions {
  /** API key (`dvx_...`); default `process.env.DEVEX_API_KEY` (Node only). */
  apiKey?: string;
  /** Core's API URL; default `process.env.DEVEX_BASE_URL` (Node only) ?? `"http://127.0.0.1:8080"`. */
  baseUrl?: string;
  /** Bounds each unary call, in ms; default 60000. Streams are not bounded by it. */
  requestTimeoutMs?: number;
  /**
   * Bounds the calls that wait for a repl's runner or for storage (start, stop, delete, snapshot create and
   * restore), in ms; default 180000. The server's own start timeout (60000 ms by default) applies within it.
   */
  lifecycleTimeoutMs?: number;
  /**
   * How long a dropped terminal or command stream keeps trying to reattach, in ms, counted from the drop;
   * default 30000. Past it the handle's `wait()` rejects with the last error. A terminal `write` that cannot
   * reach the runner is retried for as long, counted from its first failure, then rejects with
   * {@link UnavailableError}.
   */
  reconnectTimeoutMs?: number;
  /** Maps Connect errors to SDK errors (override or extend {@link defaultMapError}). */
  mapError?: (error: ConnectError) => DevexError;
  /** Extra Connect interceptors for every call, to core and to runners (tracing, logging, tests). */
  interceptors?: Interceptor[];
}

/** Options every call takes. */
export interface CallOptions {
  /** Aborts the call: it rejects with a {@link CancelledError}. */
  signal?: AbortSignal;
}

/** A template: the starting files and runtime of a new repl. */
export interface Template {
  /** Unique name, used to create a repl, e.g. `node`. */
  name: string;
  /** Name for people, e.g. "Node.js 24". */
  displayName: string;
  /** What the template contains and is for. */
  description: string;
  /** The container image its runner runs in on Kubernetes. */
  runnerImage: string;
  /** The command line that starts the template's app (run with `sh -c`); empty when none. */
  startCommand: string;
  /** The ports the template's app listens on. */
  ports: { number: number; name: string; protocol: "http" | "tcp" }[];
  /** The main programming language, lowercase; empty for none. */
  language: string;
  /** Free-form lowercase tags. */
  tags: string[];
  /** When the template last changed. */
  updatedAt: Date;
  /** Total size of the template's files, in bytes. */
  sizeBytes: number;
}

/** The templates repls are created from. */
export interface Templates {
  /** Lists the templates (all pages), ordered by name, optionally only those with a tag. */
  list(options?: { tag?: string } & CallOptions): Promise<Template[]>;
  /** Returns one template by its exact name; {@link NotFoundError} if there is none. */
  get(name: string, options?: CallOptions): Promise<Template>;
}

/** A web port of a repl's app, opened in a browser through core's preview origin ({@link Repl.previewUrl}). */
export interface ReplPort {
  /** The TCP port inside the repl. */
  number: number;
  /** The template's name for it, e.g. `web`; empty for a port the template does not declare. */
  name: string;
  /** What it speaks. */
  protocol: "http" | "tcp";
  /** True when anyone with its preview URL may open it; false (the default) when only you may. */
  public: boolean;
}

/** The lifecycle state of a repl. */
export type ReplState = "created" | "starting" | "running" | "stopping" | "stopped" | "failed" | "deleting";

/** Options of {@link Repls.create}. */
export interface CreateReplOptions extends CallOptions {
  /** 1 to 63 lowercase letters, digits and hyphens, unique among your repls. */
  name: string;
  /** The exact name of a template, e.g. `node`. */
  template: string;
  /**
   * How long the repl may run with no activity before it is stopped (saving first), in ms; between 60000 and
   * 86400000. Default: the server's (300000 ms unless configured).
   */
  idleTimeoutMs?: number;
  /** True: it is never stopped for being idle (see {@link Repl.keepAwake}). Default false. */
  keepAwake?: boolean;
  /** Free-form metadata, usable as a list filter. */
  labels?: Record<string, string>;
}

/** Options of {@link Repl.update}; what is left out is not changed. */
export interface UpdateReplOptions extends CallOptions {
  /**
   * How long the repl may run with no activity before it is stopped (saving first), in ms; between 60000 and
   * 86400000, or 0 for the server's default (300000 ms unless configured). Applies at once, also while it runs.
   */
  idleTimeoutMs?: number;
  /** True: it is never stopped for being idle, however long; false: its idle timeout applies again. */
  keepAwake?: boolean;
}

/** The caller's repls. */
export interface Repls {
  /** Creates a repl from a template, in state `created`. */
  create(options: CreateReplOptions): Promise<Repl>;
  /** By id (repl_...) or by name. */
  get(idOrName: string, options?: CallOptions): Promise<Repl>;
  /** Lists the repls (all pages), newest first, optionally filtered by state and labels. */
  list(options?: { states?: ReplState[]; labels?: Record<string, string> } & CallOptions): Promise<Repl[]>;
  /** Deletes a repl and all its data (stopping it first, without saving). */
  delete(idOrName: string, options?: { allowMissing?: boolean } & CallOptions): Promise<void>;
}

/** Why a snapshot was taken. */
export type SnapshotReason =
  | "stop"
  | "idle-stop"
  | "manual"
  | "template-seed"
  | "restore"
  | "admin-stop"
  | "system-stop";

/** A saved copy of a repl's workspace. */
export interface Snapshot {
  /** `snap_...` */
  id: string;
  /** The repl it belongs to. */
  replId: string;
  /** When the save completed. */
  createdAt: Date;
  /** Why it was taken. */
  reason: SnapshotReason;
  /** Entries in the archive (files, directories and symlinks). */
  fileCount: number;
  /** Size of the stored (compressed) archive, in bytes. */
  sizeBytes: number;
  /** Total size of the files' contents, in bytes. */
  contentSizeBytes: number;
  /** SHA-256 of the stored archive, hex. */
  sha256: string;
  /** Version of the runner that wrote it; empty for template seeds and restores. */
  runnerVersion: string;
  /** Whether the next start restores this one. */
  current: boolean;
  /** The description given when it was created; empty otherwise. */
  description: string;
  /** For a restore: the snapshot whose tree it restores; empty otherwise. */
  restoredFromSnapshotId: string;
  /**
   * How many entries of the workspace the save left out: FIFOs, sockets and devices (a snapshot
   * cannot hold them) and what the repl's user may not read. 0 when everything was saved.
   */
  skippedEntryCount: number;
  /** The first of them (at most 10). */
  skippedEntries: SkippedEntry[];
}

/** An entry of a repl's workspace that a snapshot left out. */
export interface SkippedEntry {
  /** Relative to the workspace root, "/"-separated. */
  path: string;
  /**
   * Why: a FIFO, a socket or a device (which a snapshot cannot hold), a file or folder the repl's
   * user may not read ("unreadable": a folder is saved empty), or a reason this SDK does not know.
   */
  reason: "fifo" | "socket" | "device" | "unreadable" | "unknown";
}

/** A repl's snapshots. */
export interface Snapshots {
  /** Lists the snapshots (all pages), newest first. */
  list(options?: CallOptions): Promise<Snapshot[]>;
  /** Saves the running repl's workspace now; the new snapshot becomes current. */
  create(options?: { description?: string } & CallOptions): Promise<Snapshot>;
  /** Makes an older snapshot current again (the repl must not be running); returns the new current one. */
  restore(snapshotId: string, options?: CallOptions): Promise<Snapshot>;
}

/** A file, directory, symlink or other object in the workspace. */
export interface FileEntry {
  /** The last path component; "." for the workspace root. */
  name: string;
  /** The path relative to the workspace root. */
  path: string;
  /** What kind of object it is. */
  type: "file" | "directory" | "symlink" | "other";
  /** Content length for a file, target length for a symlink. */
  sizeBytes: number;
  /** Permission bits, e.g. 0o644. */
  mode: number;
  /** When the content last changed. */
  modifiedAt: Date;
  /** For a symlink, its target as stored; empty otherwise. */
  symlinkTarget: string;
  /** For a file, an opaque version for conditional writes; empty otherwise. */
  version: string;
}

/** A change under a watched path. */
export interface FsEvent {
  /** What happened. */
  type: "create" | "write" | "remove" | "rename";
  /** The path, relative to the workspace root (for a rename, the new path). */
  path: string;
  /** For a rename, the old path. */
  oldPath?: string;
  /** Whether the entry is a directory (false for a removal, whose type is no longer known). */
  isDirectory: boolean;
}

/** A running repl's workspace files. Paths are relative to the workspace root or absolute inside it. */
export interface Filesystem {
  /** Reads a file (or a range: `offset` and `length` in bytes), at most 4 MiB per call; use `download` beyond. */
  read(path: string, options?: { offset?: number; length?: number } & CallOptions): Promise<Uint8Array>;
  /** Reads a file as UTF-8 text. */
  readText(path: string, options?: CallOptions): Promise<string>;
  /**
   * Replaces (or creates) a file atomically. Text is written as UTF-8. Content over 4 MiB goes through `upload`.
   * With `expectedVersion` it writes only if the file is still at that version ({@link FailedPreconditionError}).
   */
  write(
    path: string,
    data: string | Uint8Array,
    options?: { mode?: number; createParents?: boolean; expectedVersion?: string } & CallOptions,
  ): Promise<FileEntry>;
  /** Lists a directory (all pages); `depth` 1 (default) lists its own entries, 2 their children too, and so on. */
  list(path: string, options?: { depth?: number; includeHidden?: boolean } & CallOptions): Promise<FileEntry[]>;
  /** Describes one entry; {@link NotFoundError} if it does not exist. */
  stat(path: string, options?: CallOptions): Promise<FileEntry>;
  /** Whether an entry exists at the path. */
  exists(path: string, options?: CallOptions): Promise<boolean>;
  /** Removes a file, symlink or directory (a non-empty one only with `recursive`). */
  remove(path: string, options?: { recursive?: boolean } & CallOptions): Promise<void>;
  /** Moves or renames an entry; `overwrite` replaces an existing destination. */
  move(from: string, to: string, options?: { overwrite?: boolean } & CallOptions): Promise<void>;
  /** Copies a file or a directory tree; `overwrite` replaces (or merges into) an existing destination. */
  copy(from: string, to: string, options?: { overwrite?: boolean } & CallOptions): Promise<void>;
  /** Creates a directory; `parents` creates missing parents and accepts an existing directory. */
  mkdir(path: string, options?: { parents?: boolean; mode?: number } & CallOptions): Promise<void>;
  /** Streams changes under a path; break out of the loop or abort the signal to stop (the loop then ends). */
  watch(path: string, options?: { recursive?: boolean } & CallOptions): AsyncIterable<FsEvent>;
  /**
   * Writes a file of any size as a stream, atomically. `onProgress` receives the bytes sent so far and the
   * total when known. Browsers cannot stream request bodies: there it goes in parts of up to 4 MiB, written
   * under a temporary name beside the target and moved into place once complete.
   */
  upload(
    path: string,
    source: Uint8Array | AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
    options?: UploadOptions,
  ): Promise<FileEntry>;
  /** Reads a file of any size as a stream of chunks; `onProgress` receives the bytes received and the total. */
  download(
    path: string,
    options?: { onProgress?: (bytes: number, totalBytes: number) => void } & CallOptions,
  ): AsyncIterable<Uint8Array>;
}

/** How a command ended, with its output. */
export interface CommandResult {
  /** Its stdout, as UTF-8 text. */
  stdout: string;
  /** Its stderr, as UTF-8 text. */
  stderr: string;
  /** The exit code; null when a signal killed it. */
  exitCode: number | null;
  /** The signal that killed it, e.g. "SIGKILL". */
  signal?: string;
  /** Whether output was cut at the limit. */
  truncated: boolean;
  /** Whether it was killed because its `timeoutMs` passed. */
  timedOut: boolean;
}

/** Options of {@link Commands.run}. */
export interface RunCommandOptions extends CallOptions {
  /** Working directory, relative to the workspace root; default the root. */
  cwd?: string;
  /** Environment variables added to the base environment. */
  env?: Record<string, string>;
  /**
   * Bounds the command's run time, in ms, counted from its start: then its process group is killed and the
   * result says `timedOut`. Default: none (the call is bounded only by the signal; `requestTimeoutMs` does
   * not apply).
   */
  timeoutMs?: number;
  /** The most output kept per stream, in bytes; default 1 MiB, at most 4 MiB. */
  maxOutputBytes?: number;
}

/** Output callbacks of a started or connected command. */
export interface CommandOutputOptions {
  /** Receives stdout chunks as they come (not necessarily whole lines or characters). */
  onStdout?: (data: Uint8Array) => void;
  /** Receives stderr chunks as they come. */
  onStderr?: (data: Uint8Array) => void;
}

/** Options of {@link Commands.start}. */
export interface StartCommandOptions extends CommandOutputOptions, CallOptions {
  /** Working directory, relative to the workspace root; default the root. */
  cwd?: string;
  /** Environment variables added to the base environment. */
  env?: Record<string, string>;
  /** A name to find the process again with `connect`, unique among running processes. */
  tag?: string;
  /** Keep stdin open for `sendInput` (default false: stdin reads end-of-file). */
  stdin?: boolean;
  /** Bounds the command's run time, in ms, counted from its start; then it is killed. Default: none. */
  timeoutMs?: number;
}

/** A command running in the repl. It outlives the handle: `disconnect` detaches, `kill` ends it. */
export interface CommandHandle {
  /** Its process id. */
  readonly pid: number;
  /** Resolves when it exits, with all the output this handle received. */
  wait(): Promise<CommandResult>;
  /** Sends a signal to its process group; default "KILL". */
  kill(signal?: "TERM" | "KILL" | "INT" | "HUP" | string): Promise<void>;
  /** Writes to its stdin (it must have been started with `stdin: true`). */
  sendInput(data: string | Uint8Array): Promise<void>;
  /** Closes its stdin, so it reads end-of-file. */
  closeStdin(): Promise<void>;
  /** Stops receiving its output; it keeps running (`connect` reattaches). `wait()` then rejects. */
  disconnect(): void;
}

/** A process the runner knows, running or recently exited. */
export interface CommandInfo {
  /** Its process id. */
  pid: number;
  /** The tag it was started with; empty if none. */
  tag: string;
  /** The argv that ran (a shell command is `["bash", "-lc", command]`). */
  command: string[];
  /** Whether it is still running. */
  running: boolean;
  /** Its exit code, once it exited by itself. */
  exitCode?: number;
}

/** Commands in a running repl, without a terminal. */
export interface Commands {
  /** Runs a command to completion (a string runs with `bash -lc`, an array directly) and returns its output. */
  run(command: string | string[], options?: RunCommandOptions): Promise<CommandResult>;
  /** Starts a command and resolves once it runs; output goes to the callbacks as it comes. */
  start(command: string | string[], options?: StartCommandOptions): Promise<CommandHandle>;
  /** Attaches to a running (or recently exited) command by pid or tag, replaying its retained output. */
  connect(pidOrTag: number | string, options?: CommandOutputOptions & CallOptions): Promise<CommandHandle>;
  /** Lists the running and recently exited commands. */
  list(options?: CallOptions): Promise<CommandInfo[]>;
}

/** How a terminal's program ended. */
export interface TerminalExit {
  /** The exit code; null when a signal ended it. */
  exitCode: number | null;
  /** The signal that ended it, e.g. "SIGHUP". */
  signal?: string;
}

/**
 * Output a terminal handle skipped, as {@link TerminalOutputOptions.onLag} receives it. Offsets count the
 * session's output bytes from 0.
 */
export interface TerminalLag {
  /** How many output bytes `onData` did not receive: `resumeOffset - fromOffset`. */
  skippedBytes: number;
  /** The offset of the first byte skipped. */
  fromOffset: number;
  /** The offset where output continues. */
  resumeOffset: number;
  /**
   * Whether `onData` receives a redraw next: a full reset (`ESC c`) then the screen as of `resumeOffset`, so
   * a terminal emulator fed by `onData` shows what it would have shown without the gap.
   */
  snapshot: boolean;
}

/** Output callbacks of a terminal handle. */
export interface TerminalOutputOptions {
  /**
   * Receives output bytes in order, each exactly once, across automatic reattaches, unless `onLag` says how
   * many were skipped.
   */
  onData?: (data: Uint8Array) => void;
  /**
   * Called when output is skipped: this handle fell behind the session's other, faster clients by more than
   * the runner's scrollback (1 MiB by default), or a reattach came after the output it missed had left the
   * scrollback. Called before `onData` receives the redraw, if any. The only client of a session is never
   * skipped: the program waits for it, as it would for a real terminal.
   */
  onLag?: (lag: TerminalLag) => void;
  /** Called once when the program exits. */
  onExit?: (exit: TerminalExit) => void;
}

/** Options of {@link Terminals.create}. */
export interface CreateTerminalOptions extends TerminalOutputOptions, CallOptions {
  /** Width in columns; default 80. */
  cols?: number;
  /** Height in rows; default 24. */
  rows?: number;
  /** The program and its arguments; default the login shell. */
  command?: string[];
  /** Working directory, relative to the workspace root; default the root. */
  cwd?: string;
  /** Environment variables added to the base environment. */
  env?: Record<string, string>;
}

/** Options of {@link Terminals.connect}. */
export interface ConnectTerminalOptions extends TerminalOutputOptions, CallOptions {
  /** replay from this output offset; default: the current screen */
  fromOffset?: number;
  /**
   * Resize the session to this width before attaching (set with `rows`), so the screen is drawn at the
   * caller's size from the first byte; default: the session keeps its size.
   */
  cols?: number;
  /** Resize the session to this height before attaching (set with `cols`). */
  rows?: number;
}

/** Options of {@link Filesystem.upload}. */
export interface UploadOptions extends CallOptions {
  /** The permission bits of the file; 0 (default) keeps an existing file's, 0644 for a new one. */
  mode?: number;
  /** Create missing parent directories. */
  createParents?: boolean;
  /** Called with the bytes sent so far and the total when it is known. */
  onProgress?: (bytes: number, totalBytes?: number) => void;
}

/** A terminal session's summary. */
export interface TerminalInfo {
  /** The session id. */
  id: string;
  /** Width in columns. */
  cols: number;
  /** Height in rows. */
  rows: number;
  /** Whether its program is still running. */
  running: boolean;
  /** How many clients are attached right now. */
  attachedClients: number;
}

/** Terminal sessions in a running repl. */
export interface Terminals {
  /** Starts a session and attaches to it (from its first output byte). */
  create(options?: CreateTerminalOptions): Promise<TerminalHandle>;
  /** Attaches to an existing session, replaying what this client missed. */
  connect(sessionId: string, options?: ConnectTerminalOptions): Promise<TerminalHandle>;
  /** Lists the sessions, running and recently exited. */
  list(options?: CallOptions): Promise<TerminalInfo[]>;
}

/**
 * An attached terminal session. A dropped connection is reattached automatically from {@link offset}, so
 * `onData` receives every byte exactly once and in order, unless `onLag` says how many were skipped.
 */
export interface TerminalHandle {
  /** The session id. */
  readonly id: string;
  /** Output offset of the next byte this handle will receive. */
  readonly offset: number;
  /**
   * Sends input (keystrokes; text as UTF-8) after the writes before it. Resolves once the runner has handed
   * all of it to the terminal, exactly once; larger writes than one call takes are sent in parts. While the
   * runner cannot be reached it is retried (applied once however often it is sent) for `reconnectTimeoutMs`,
   * then rejects with {@link UnavailableError}; it rejects at once if the program has exited. A rejected
   * write never holds up the writes after it.
   */
  write(data: string | Uint8Array): Promise<void>;
  /** Sets the terminal size. */
  resize(cols: number, rows: number): Promise<void>;
  /** Resolves when the program exits. */
  wait(): Promise<TerminalExit>;
  /** Detaches; the session lives on (connect(id) reattaches with replay). */
  disconnect(): Promise<void>;
  /** Ends the session (SIGHUP, then SIGKILL after a grace period) and resolves once it has exited. */
  kill(): Promise<void>;
}
