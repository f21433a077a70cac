import { type BigIntStats, type FSWatcher, watch as watchPath } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Entry,
  type WatchEvent,
  WatchEventSchema,
  WatchEventType,
  type WatchRequest,
  type WatchResponse,
  WatchResponseSchema,
} from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import type { Logger } from "pino";
import { Channel } from "../channel.js";
import { describeEntry } from "./entry.js";
import { errnoOf, pathError } from "./errors.js";
import { compileExcludes, type ExcludeMatcher } from "./exclude.js";
import { isSameOrBelow, joinRelative } from "./paths.js";
import type { Resolver } from "./resolver.js";

/** The debounce window when the request does not say, in ms. */
const defaultDebounceMs = 100;
/** Messages a client may leave unread before it is told it fell behind (WatchOverflow). */
const maxQueuedMessages = 256;
/** Events per WatchEvents message, so that a huge burst does not make one huge message. */
const maxEventsPerMessage = 1000;

/** Options for {@link startWatch}. */
export interface WatchOptions {
  resolver: Resolver;
  logger: Logger;
  /** Silence after which the stream carries a keepalive, in ms. */
  keepaliveMs: number;
  /** Ends the watch (the client went away). */
  signal: AbortSignal;
}

/** A running watch: its messages, and a way to end it from the server side. */
export interface Watch {
  messages: AsyncIterable<WatchResponse>;
  /** Ends the stream with `error` (or normally without one) and releases the kernel watches. */
  close(error?: ConnectError): void;
}

interface Known {
  /** Identifies the object across a rename; see {@link identityOf}. */
  id: string;
  dir: boolean;
}

/**
 * What identifies a file system object across a rename: its inode number, which the kernel
 * reuses (a file removed and another created within one window may get the same one), so
 * also its birth time, and for a file its modification time, which a rename keeps and a
 * newly created file does not share.
 */
function identityOf(stats: BigIntStats): Known {
  const dir = stats.isDirectory();
  return { id: `${stats.ino}:${stats.birthtimeNs}:${dir ? "" : stats.mtimeNs}`, dir };
}

interface Dirty {
  /** A "change" (content or mode) was reported, not only a "rename" (appeared, vanished, moved). */
  changed: boolean;
}

/**
 * Starts a Watch: resolves the path, puts kernel watches in place (inotify through
 * fs.watch, one per directory), indexes what is there, and sends `started`.
 *
 * Node's own `recursive` option is not used: on Linux it stats every file synchronously and
 * watches each one separately, and it cannot skip excluded or hidden trees. Here every
 * directory of the tree that is reported on gets one non-recursive watch, and excluded and
 * hidden directories are never descended into.
 *
 * Events only say which paths to look at. When the debounce window has been quiet, each of
 * those paths is stat'ed and compared with the index (the tree as last reported), which
 * gives the net change per path: a file created and removed within the window is not
 * reported at all; a path that vanished and one that appeared with the same inode are a
 * RENAME; a path whose inode changed (an editor's atomic save) is a WRITE. The entries in
 * events are built by the confined resolver, so nothing outside the workspace is reported
 * even if a directory is swapped for a symlink while it is being watched.
 *
 * The index costs memory in proportion to the watched tree (exclude node_modules and the
 * like). `overflow` is sent when the client falls behind or the kernel refuses more watches;
 * Node does not expose inotify's own queue overflow, so that one cannot be reported.
 */
export async function startWatch(req: WatchRequest, options: WatchOptions): Promise<Watch> {
  const watch = new TreeWatch(req, options);
  await watch.start();
  return watch;
}

class TreeWatch implements Watch {
  readonly channel: Channel<WatchResponse>;
  private readonly resolver: Resolver;
  private readonly excluded: ExcludeMatcher;
  private readonly debounceMs: number;
  private readonly maxWaitMs: number;
  private readonly watchers = new Map<string, FSWatcher>();
  private readonly index = new Map<string, Known>();
  private dirty = new Map<string, Dirty>();
  private rescans = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private batchStartedAt = 0;
  private flushing = false;
  private flushAgain = false;
  private overflowed = false;
  private closed = false;
  private rootRel = ".";
  private rootId = "";
  private rootIsDirectory = true;

  constructor(
    private readonly req: WatchRequest,
    private readonly options: WatchOptions,
  ) {
    this.resolver = options.resolver;
    this.excluded = compileExcludes(req.exclude);
    this.debounceMs = req.debounceMs || defaultDebounceMs;
    // Under a constant trickle of changes, report at least this often rather than never.
    this.maxWaitMs = Math.max(1_000, 4 * this.debounceMs);
    this.channel = new Channel<WatchResponse>({
      keepaliveMs: options.keepaliveMs,
      keepalive: () => create(WatchResponseSchema, { kind: { case: "keepalive", value: { sentAt: timestampNow() } } }),
      signal: options.signal,
    });
    options.signal.addEventListener("abort", () => this.close(), { once: true });
  }

  get messages(): AsyncIterable<WatchResponse> {
    return this.channel;
  }

  async start(): Promise<void> {
    const entry = await this.resolver.with(this.req.path, { follow: true }, async (located) => {
      if (!located.stats) throw pathError(Code.NotFound, this.req.path, "does not exist");
      this.rootRel = located.rel;
      this.rootId = identityOf(located.stats).id;
      this.rootIsDirectory = located.stats.isDirectory();
      return describeEntry(this.resolver, located, located.stats);
    });
    try {
      if (this.rootIsDirectory) {
        this.watchDirectory(this.rootRel);
        await this.scan(this.rootRel, undefined);
      } else {
        this.watchDirectory(parentOf(this.rootRel));
        this.index.set(this.rootRel, { id: this.rootId, dir: false });
      }
    } catch (error) {
      this.close();
      throw error;
    }
    this.channel.push(create(WatchResponseSchema, { kind: { case: "started", value: { entry } } }));
  }

  close(error?: ConnectError): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    for (const watcher of this.watchers.values()) watcher.close();
    this.watchers.clear();
    this.index.clear();
    if (error) this.channel.fail(error);
    else this.channel.close();
  }

  private abs(rel: string): string {
    return rel === "." ? this.resolver.workspace : `${this.resolver.workspace}/${rel}`;
  }

  /** The path relative to the watched directory ("" for itself), for hidden and exclude rules. */
  private inRoot(rel: string): string {
    if (rel === this.rootRel) return "";
    return this.rootRel === "." ? rel : rel.slice(this.rootRel.length + 1);
  }

  private hidden(rel: string): boolean {
    if (this.req.includeHidden) return false;
    const inside = this.inRoot(rel);
    return inside !== "" && inside.split("/").some((name) => name.startsWith("."));
  }

  private reported(rel: string, dir: boolean): boolean {
    const inside = this.inRoot(rel);
    if (!this.rootIsDirectory) return rel === this.rootRel;
    return inside !== "" && !this.hidden(rel) && !this.excluded(inside, dir);
  }

  private watchDirectory(rel: string): void {
    if (this.closed || this.watchers.has(rel)) return;
    let watcher: FSWatcher;
    try {
      watcher = watchPath(this.abs(rel), { persistent: false }, (type, name) => this.onEvent(rel, type, name));
    } catch (error) {
      const code = errnoOf(error);
      if (code === "ENOENT" || code === "ENOTDIR") return;
      if (code === "ENOSPC") {
        this.overflow("too many directories to watch (raise fs.inotify.max_user_watches)");
        return;
      }
      throw error;
    }
    watcher.on("error", (error) => {
      this.options.logger.debug({ err: error, path: rel }, "watch: a directory watch failed");
      watcher.close();
      this.watchers.delete(rel);
      this.markDirty(rel, false);
    });
    this.watchers.set(rel, watcher);
  }

  private unwatchBelow(rel: string): void {
    for (const [path, watcher] of this.watchers) {
      if (isSameOrBelow(path, rel) && path !== this.rootRel) {
        watcher.close();
        this.watchers.delete(path);
      }
    }
    for (const path of this.index.keys()) {
      if (isSameOrBelow(path, rel)) this.index.delete(path);
    }
  }

  /**
   * Indexes (and, recursively, watches) what is below `rel`; with `found`, also collects
   * the paths that are new, to be reported as created.
   */
  private async scan(rel: string, found: string[] | undefined): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.abs(rel));
    } catch {
      return;
    }
    for (const name of names.sort()) {
      if (this.closed) return;
      const child = joinRelative(rel, name);
      const stats = await lstat(this.abs(child), { bigint: true }).catch(() => undefined);
      if (!stats || !this.reported(child, stats.isDirectory())) continue;
      const known = this.index.get(child);
      this.index.set(child, identityOf(stats));
      if (!known) found?.push(child);
      if (stats.isDirectory() && this.req.recursive) {
        this.watchDirectory(child);
        await this.scan(child, found);
      }
    }
  }

  private onEvent(dirRel: string, type: string, name: string | Buffer | null): void {
    if (this.closed) return;
    if (name === null) {
      this.rescans.add(dirRel);
      this.schedule();
      return;
    }
    const rel = joinRelative(dirRel, name.toString());
    if ((!this.rootIsDirectory && rel !== this.rootRel) || this.hidden(rel)) {
      // Not reported, but it may be the watched path itself going away: look at the root.
      if (type === "rename") this.schedule();
      return;
    }
    this.markDirty(rel, type === "change");
  }

  private markDirty(rel: string, changed: boolean): void {
    const seen = this.dirty.get(rel);
    if (seen) seen.changed ||= changed;
    else this.dirty.set(rel, { changed });
    this.schedule();
  }

  private schedule(): void {
    if (this.closed) return;
    const now = Date.now();
    if (this.timer === undefined) this.batchStartedAt = now;
    clearTimeout(this.timer);
    const delay = Math.max(0, Math.min(this.debounceMs, this.batchStartedAt + this.maxWaitMs - now));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, delay);
  }

  private async flush(): Promise<void> {
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    this.flushing = true;
    try {
      await this.report();
    } catch (error) {
      this.options.logger.warn({ err: error, path: this.rootRel }, "watch: reporting changes failed");
    } finally {
      this.flushing = false;
    }
    if (this.flushAgain && !this.closed) {
      this.flushAgain = false;
      this.schedule();
    }
  }

  private async report(): Promise<void> {
    for (const dir of this.rescans) {
      const names = await readdir(this.abs(dir)).catch(() => [] as string[]);
      for (const name of names) this.markDirty(joinRelative(dir, name), false);
      for (const path of this.index.keys()) if (parentOf(path) === dir) this.markDirty(path, false);
    }
    this.rescans.clear();
    // Looked at first, so that the changes that led to it (a watched file's removal) are
    // reported before the stream ends.
    const rootGone = !(await this.rootAlive());
    if (rootGone && !this.rootIsDirectory) this.markDirty(this.rootRel, false);
    const batch = this.dirty;
    this.dirty = new Map();
    clearTimeout(this.timer);
    this.timer = undefined;

    interface Change {
      rel: string;
      old: Known | undefined;
      now: Known | undefined;
      changed: boolean;
    }
    const changes: Change[] = [];
    for (const [rel, { changed }] of batch) {
      if (this.closed) return;
      const stats = await lstat(this.abs(rel), { bigint: true }).catch(() => undefined);
      const now = stats && this.reported(rel, stats.isDirectory()) ? identityOf(stats) : undefined;
      changes.push({ rel, old: this.index.get(rel), now, changed });
    }

    // Pair what vanished with what appeared as the same object: those are renames.
    const vanished = new Map<string, Change>();
    for (const c of changes) if (c.old && c.now?.id !== c.old.id) vanished.set(c.old.id, c);
    const renamedFrom = new Map<Change, Change>();
    for (const c of changes) {
      if (!c.now || c.old?.id === c.now.id) continue;
      const source = vanished.get(c.now.id);
      if (source && source !== c) {
        renamedFrom.set(c, source);
        vanished.delete(c.now.id);
      }
    }
    const sources = new Set(renamedFrom.values());
    // What was below a removed directory is not reported one by one: the directory's removal says it.
    const removedDirs = changes.filter((c) => c.old?.dir && !c.now && !sources.has(c)).map((c) => c.rel);
    const belowRemoved = (rel: string) => removedDirs.some((d) => rel !== d && isSameOrBelow(rel, d));

    const events: { type: WatchEventType; rel: string; oldRel?: string }[] = [];
    for (const c of changes) {
      const source = renamedFrom.get(c);
      if (source) {
        events.push({ type: WatchEventType.RENAME, rel: c.rel, oldRel: source.rel });
        this.unwatchBelow(source.rel);
        this.unwatchBelow(c.rel);
        this.index.set(c.rel, c.now as Known);
        if (c.now?.dir && this.req.recursive) {
          this.watchDirectory(c.rel);
          await this.scan(c.rel, undefined);
        }
        continue;
      }
      // The old object at a rename's source moved away; whatever is there now is new.
      const old = sources.has(c) ? undefined : c.old;
      if (!c.now) {
        if (!old) continue;
        if (!belowRemoved(c.rel)) events.push({ type: WatchEventType.REMOVE, rel: c.rel });
        this.unwatchBelow(c.rel);
        continue;
      }
      const replaced = old !== undefined && old.id !== c.now.id;
      if (old && !replaced && !c.changed) continue;
      events.push({ type: old ? WatchEventType.WRITE : WatchEventType.CREATE, rel: c.rel });
      if (replaced) this.unwatchBelow(c.rel);
      this.index.set(c.rel, c.now);
      if (c.now.dir && this.req.recursive && (!old || replaced)) {
        this.watchDirectory(c.rel);
        const found: string[] = [];
        await this.scan(c.rel, found);
        for (const rel of found) events.push({ type: WatchEventType.CREATE, rel });
      }
    }

    const built: WatchEvent[] = [];
    for (const e of events) {
      const entry = e.type === WatchEventType.REMOVE ? undefined : await this.entryOf(e.rel);
      // Gone again already, or now reached through a symlink that leaves the workspace.
      if (e.type !== WatchEventType.REMOVE && !entry) continue;
      built.push(create(WatchEventSchema, { type: e.type, path: e.rel, oldPath: e.oldRel ?? "", entry }));
    }
    this.send(built);
    if (rootGone) {
      this.close(new ConnectError(`${JSON.stringify(this.rootRel)} was removed; the watch has ended`, Code.NotFound));
    }
  }

  private async entryOf(rel: string): Promise<Entry | undefined> {
    try {
      return await this.resolver.with(rel, {}, async (located) =>
        located.stats && located.rel === rel ? describeEntry(this.resolver, located, located.stats) : undefined,
      );
    } catch {
      return undefined;
    }
  }

  private send(events: WatchEvent[]): void {
    if (events.length === 0 || this.closed) return;
    if (this.overflowed && this.channel.size === 0) this.overflowed = false;
    if (this.overflowed) return;
    if (this.channel.size >= maxQueuedMessages) {
      this.overflow("client too slow");
      return;
    }
    for (let i = 0; i < events.length; i += maxEventsPerMessage) {
      this.channel.push(
        create(WatchResponseSchema, {
          kind: { case: "events", value: { events: events.slice(i, i + maxEventsPerMessage) } },
        }),
      );
    }
  }

  private overflow(reason: string): void {
    if (this.overflowed) return;
    this.overflowed = true;
    this.channel.push(create(WatchResponseSchema, { kind: { case: "overflow", value: { reason } } }));
  }

  /** Whether the watched path is still there (for a directory: the same directory). */
  private async rootAlive(): Promise<boolean> {
    const stats = await lstat(this.abs(this.rootRel), { bigint: true }).catch(() => undefined);
    if (!stats) return false;
    return this.rootIsDirectory ? identityOf(stats).id === this.rootId : !stats.isDirectory();
  }
}

function parentOf(rel: string): string {
  const slash = rel.lastIndexOf("/");
  return slash === -1 ? "." : rel.slice(0, slash);
}
