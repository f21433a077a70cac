import type { Repl as ProtoRepl } from "@devex/gen/devex/core/v1/repl_pb.js";
import { CommandsModule } from "./commands.js";
import { replStateName, toDate, toOptionalDate, toReplPort, toSnapshot } from "./convert.js";
import { FilesystemModule } from "./filesystem.js";
import { allPages, type Context } from "./internal/context.js";
import { TerminalsModule } from "./terminal.js";
import type {
  CallOptions,
  Commands,
  Filesystem,
  ReplPort,
  ReplState,
  Snapshot,
  Snapshots,
  Terminals,
  UpdateReplOptions,
} from "./types.js";

/**
 * A repl as of the moment it was read: its fields do not change (`refresh` reads it again). Its `fs`,
 * `commands` and `terminal` reach the repl's runner, so the repl must be running; the runner token they need
 * is fetched, cached and refreshed for you.
 */
export class Repl {
  /** `repl_...`; never changes. */
  readonly id: string;
  /** Unique among your repls. */
  readonly name: string;
  /** The template it was created from. */
  readonly templateName: string;
  /** Its lifecycle state. */
  readonly state: ReplState;
  /** Increases on every change of the record. */
  readonly version: number;
  /** Why it is `failed`; empty otherwise. */
  readonly failureReason: string;
  /** When it was created. */
  readonly createdAt: Date;
  /** When the record last changed. */
  readonly updatedAt: Date;
  /** When it last became running. */
  readonly lastStartedAt?: Date;
  /** When it last became stopped. */
  readonly lastStoppedAt?: Date;
  /**
   * The last activity core saw, if any: terminal or process traffic, attached clients, file changes, a command
   * still running, or a terminal whose shell runs a command in the foreground (attached or not).
   */
  readonly lastActiveAt?: Date;
  /** How long it may run with no activity before it is stopped (saving first), in ms, unless {@link Repl.keepAwake}. */
  readonly idleTimeoutMs: number;
  /** True when it is never stopped for being idle (set with {@link Repl.update} or at create). */
  readonly keepAwake: boolean;
  /** What the next start restores. */
  readonly currentSnapshotId: string;
  /** Free-form metadata. */
  readonly labels: Record<string, string>;
  /** Its web ports: the template's, and any made public; see {@link Repl.previewUrl}. */
  readonly ports: ReplPort[];
  /** Its saved workspaces. */
  readonly snapshots: Snapshots;
  /** Its workspace files (the repl must be running). */
  readonly fs: Filesystem;
  /** Commands in it (the repl must be running). */
  readonly commands: Commands;
  /** Terminal sessions in it (the repl must be running). */
  readonly terminal: Terminals;
  readonly #context: Context;

  /** @internal */
  constructor(context: Context, repl: ProtoRepl) {
    this.#context = context;
    this.id = repl.id;
    this.name = repl.name;
    this.templateName = repl.templateName;
    this.state = replStateName(repl.state);
    this.version = Number(repl.version);
    this.failureReason = repl.failureReason;
    this.createdAt = toDate(repl.createdAt);
    this.updatedAt = toDate(repl.updatedAt);
    const lastStartedAt = toOptionalDate(repl.lastStartedAt);
    if (lastStartedAt) this.lastStartedAt = lastStartedAt;
    const lastStoppedAt = toOptionalDate(repl.lastStoppedAt);
    if (lastStoppedAt) this.lastStoppedAt = lastStoppedAt;
    const lastActiveAt = toOptionalDate(repl.lastActiveAt);
    if (lastActiveAt) this.lastActiveAt = lastActiveAt;
    this.idleTimeoutMs = repl.idleTimeoutMs;
    this.keepAwake = repl.keepAwake;
    this.currentSnapshotId = repl.currentSnapshotId;
    this.labels = { ...repl.labels };
    this.ports = repl.ports.map(toReplPort);
    const runner = context.runner(repl.id);
    this.snapshots = new SnapshotsModule(context, repl.id);
    this.fs = new FilesystemModule(context, runner);
    this.commands = new CommandsModule(context, runner);
    this.terminal = new TerminalsModule(context, runner);
  }

  /** Starts it (no-op when running) and resolves when running. Bounded by `lifecycleTimeoutMs`. */
  async start(options: CallOptions = {}): Promise<Repl> {
    const context = this.#context;
    const response = await context.call(
      (call) => context.repls.startRepl({ replId: this.id }, call),
      options.signal,
      context.lifecycleTimeoutMs,
    );
    context.runner(this.id).seed(response.access);
    return toRepl(context, response.repl);
  }

  /** Saves and stops; resolves with the repl stopped and the snapshot saved, if any. Bounded by `lifecycleTimeoutMs`. */
  async stop(options: CallOptions = {}): Promise<{ repl: Repl; snapshot?: Snapshot }> {
    const context = this.#context;
    const response = await context.call(
      (call) => context.repls.stopRepl({ replId: this.id }, call),
      options.signal,
      context.lifecycleTimeoutMs,
    );
    context.runner(this.id).invalidate();
    const repl = toRepl(context, response.repl);
    return response.snapshot ? { repl, snapshot: toSnapshot(response.snapshot) } : { repl };
  }

  /**
   * Changes its idle policy: `keepAwake: true` keeps it running however long it has no activity (until you
   * stop it, or set `keepAwake: false`), `idleTimeoutMs` sets how long it may be idle. Resolves with the repl
   * after the change. Needs a key that may change repls (not read-only).
   *
   * @example
   * ```ts
   * await repl.update({ keepAwake: true }); // a long job with no output and nobody watching
   * ```
   */
  async update(options: UpdateReplOptions): Promise<Repl> {
    const context = this.#context;
    const response = await context.call(
      (call) =>
        context.repls.updateRepl(
          {
            replId: this.id,
            ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
            ...(options.keepAwake === undefined ? {} : { keepAwake: options.keepAwake }),
          },
          call,
        ),
      options.signal,
    );
    return toRepl(context, response.repl);
  }

  /**
   * The URL at which a browser opens the web app listening on `port` inside the repl (its own host on
   * core's preview origin). For a private port (the default) the URL signs you in: it carries a token
   * that expires about a minute after this call, so open it soon and do not share it; the browser then
   * keeps a cookie of the preview's host for hours. A public port's URL needs nothing and does not
   * change. The repl need not be running (a stopped repl's preview says so).
   *
   * @example
   * ```ts
   * const repl = await devex.repls.get("my-app");
   * console.log(await repl.previewUrl(3000)); // http://3000-repl-....localhost:8083/?devex_preview_token=...
   * ```
   */
  async previewUrl(port: number, options: CallOptions = {}): Promise<string> {
    const context = this.#context;
    const response = await context.call(
      (call) => context.repls.getPreviewUrl({ replId: this.id, port }, call),
      options.signal,
    );
    return response.url;
  }

  /**
   * Makes `port` public (`true`: anyone with its preview URL may open it, with no token) or private
   * again (`false`: only you, through {@link Repl.previewUrl}). Resolves with the repl after the change.
   */
  async setPortVisibility(port: number, isPublic: boolean, options: CallOptions = {}): Promise<Repl> {
    const context = this.#context;
    const response = await context.call(
      (call) => context.repls.setPortVisibility({ replId: this.id, port, public: isPublic }, call),
      options.signal,
    );
    return toRepl(context, response.repl);
  }

  /** Reads the repl again. */
  async refresh(options: CallOptions = {}): Promise<Repl> {
    const context = this.#context;
    const { repl } = await context.call(
      (call) => context.repls.getRepl({ repl: { case: "replId", value: this.id } }, call),
      options.signal,
    );
    return toRepl(context, repl);
  }

  /**
   * Yields the repl now and after every change, until it is deleted, the loop breaks, or the signal aborts
   * (the loop then ends). Not bounded by `requestTimeoutMs`.
   */
  async *watch(options: CallOptions = {}): AsyncIterable<Repl> {
    const context = this.#context;
    const stop = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
    try {
      for await (const message of context.repls.watchRepl({ replId: this.id }, { signal })) {
        if (message.event.case === "repl") yield toRepl(context, message.event.value);
        if (message.event.case === "deleted") return;
      }
    } catch (error) {
      if (options.signal?.aborted) return;
      throw context.error(error);
    } finally {
      stop.abort();
    }
  }
}

/** A Repl from a response that must carry one. */
export function toRepl(context: Context, repl: ProtoRepl | undefined): Repl {
  if (!repl) throw context.error(new Error("core returned no repl"));
  return new Repl(context, repl);
}

class SnapshotsModule implements Snapshots {
  constructor(
    private readonly context: Context,
    private readonly replId: string,
  ) {}

  list(options: CallOptions = {}): Promise<Snapshot[]> {
    return this.context.call(
      (call) =>
        allPages(async (pageToken) => {
          const response = await this.context.repls.listSnapshots(
            { replId: this.replId, pageToken, pageSize: 1000 },
            call,
          );
          return { items: response.snapshots.map(toSnapshot), next: response.nextPageToken };
        }),
      options.signal,
    );
  }

  async create(options: { description?: string } & CallOptions = {}): Promise<Snapshot> {
    const { snapshot } = await this.context.call(
      (call) =>
        this.context.repls.createSnapshot({ replId: this.replId, description: options.description ?? "" }, call),
      options.signal,
      this.context.lifecycleTimeoutMs,
    );
    if (!snapshot) throw this.context.error(new Error("core returned no snapshot"));
    return toSnapshot(snapshot);
  }

  async restore(snapshotId: string, options: CallOptions = {}): Promise<Snapshot> {
    const { snapshot } = await this.context.call(
      (call) => this.context.repls.restoreSnapshot({ replId: this.replId, snapshotId }, call),
      options.signal,
      this.context.lifecycleTimeoutMs,
    );
    if (!snapshot) throw this.context.error(new Error("core returned no snapshot"));
    return toSnapshot(snapshot);
  }
}
