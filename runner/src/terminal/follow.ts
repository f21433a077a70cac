import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { KeepaliveSchema } from "@devex/gen/devex/runner/v1/runner_pb.js";
import type { AttachResponse, ScreenSnapshot, SessionAttached } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { ScreenSnapshotSchema } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { exitStatusOf, sessionInfo } from "./convert.js";
import type { ScreenState } from "./screen.js";
import type { TerminalSession } from "./session.js";

/** The events Attach and StreamOutput share. */
export type SessionEvent = Exclude<AttachResponse["event"], { case: "pong" | undefined }>;

/** The most output sent in one message, in bytes: large enough to batch floods, small enough to interleave. */
const maxChunkBytes = 256 * 1024;

/**
 * Output waiting of at least this many bytes means a program is writing in bulk, so the
 * stream waits {@link bulkDelayMs} to send it in fewer, larger messages. Less than this
 * (keystroke echo, a prompt) goes out at once. It is half a PTY read: a program writing
 * in bulk fills each read (4095 bytes on Linux), and a stream that keeps up sees one read
 * at a time, so a threshold above one read would send a flood in 4 KiB messages.
 */
const bulkBytes = 2048;
const bulkDelayMs = 3;

/** Where a client starts reading and what it is told first. */
export interface FollowStart {
  attached: SessionAttached;
  offset: number;
}

/** Options for {@link follow}. */
export interface FollowOptions {
  /** Send a snapshot when the client falls out of the scrollback, instead of a bare gap. */
  snapshots: boolean;
  keepaliveMs: number;
  signal: AbortSignal;
  /** Messages to slip in ahead of output (pongs); `wake` is called when one is ready. */
  extra?: { take(): AttachResponse["event"] | undefined; onReady(wake: () => void): void };
}

/**
 * Decides where a client starts: raw replay from `fromOffset` while it is retained, a
 * screen snapshot when asked for (or when the offset has left the buffer), or live output.
 */
export async function startPosition(
  session: TerminalSession,
  fromOffset: number | undefined,
  wantSnapshot: boolean,
  replayAllByDefault: boolean,
): Promise<FollowStart> {
  const { scrollback } = session;
  let offset = scrollback.end;
  let truncated = false;
  let snapshot: ScreenSnapshot | undefined;
  const from = fromOffset ?? (replayAllByDefault ? 0 : undefined);
  if (from !== undefined && from >= scrollback.start) {
    offset = from;
  } else if (wantSnapshot) {
    const state = await session.screen.snapshot();
    snapshot = snapshotMessage(state);
    offset = state.offset;
  } else if (from !== undefined) {
    offset = scrollback.start;
    truncated = true;
  }
  return {
    offset,
    attached: {
      $typeName: "devex.runner.v1.SessionAttached",
      session: sessionInfo(session),
      offset: BigInt(offset),
      replayTruncated: truncated,
      oldestRetainedOffset: BigInt(scrollback.start),
      snapshot,
    },
  };
}

function snapshotMessage(state: ScreenState): ScreenSnapshot {
  return create(ScreenSnapshotSchema, {
    data: state.data,
    cols: state.cols,
    rows: state.rows,
    offset: BigInt(state.offset),
  });
}

/**
 * The events of one client reading a session from `start`: output in order from its own
 * cursor in the shared scrollback, resizes, keepalives after silence, `lagged` if it fell out
 * of the scrollback, and the exit. Its cursor moves when the stream takes the next message (a
 * server stream pulls only once the transport has room), and the session's backpressure
 * pauses the PTY while every client's cursor is behind, so a sole client never lags.
 */
export async function* follow(
  session: TerminalSession,
  start: FollowStart,
  options: FollowOptions,
): AsyncGenerator<SessionEvent | AttachResponse["event"]> {
  const { scrollback } = session;
  let cursor = start.offset;
  let resizes = session.resizeCount;
  let lastSent = Date.now();
  // One subscription, abort listener and keepalive timer for the whole stream rather than
  // one per wait: a client waits after nearly every keystroke.
  let resume: (() => void) | undefined;
  const notify = () => {
    const wake = resume;
    resume = undefined;
    wake?.();
  };
  let keepaliveTimer: NodeJS.Timeout | undefined;
  const unwatch = session.watch(notify);
  const position = session.backpressure.track(cursor);
  // A client gone while the PTY waits for it lets the PTY go at once, whatever the stream does next.
  const gone = () => {
    position.close();
    notify();
  };
  options.signal.addEventListener("abort", gone, { once: true });
  // Lets a pong that is ready cut short a wait for output.
  options.extra?.onReady(notify);
  try {
    yield { case: "attached", value: start.attached };
    while (!options.signal.aborted) {
      const extra = options.extra?.take();
      if (extra) {
        yield extra;
        continue;
      }
      if (session.resizeCount !== resizes) {
        resizes = session.resizeCount;
        lastSent = Date.now();
        yield {
          case: "resized",
          value: {
            $typeName: "devex.runner.v1.SessionResized",
            cols: session.cols,
            rows: session.rows,
            offset: BigInt(scrollback.end),
          },
        };
        continue;
      }
      if (cursor < scrollback.end) {
        if (cursor < scrollback.start) {
          const skippedFrom = cursor;
          let snapshot: ScreenSnapshot | undefined;
          if (options.snapshots) {
            const state = await session.screen.snapshot();
            snapshot = snapshotMessage(state);
            cursor = Math.max(state.offset, scrollback.start);
          } else {
            cursor = scrollback.start;
          }
          position.advance(cursor);
          lastSent = Date.now();
          yield {
            case: "lagged",
            value: {
              $typeName: "devex.runner.v1.SessionLagged",
              skippedFromOffset: BigInt(skippedFrom),
              resumeOffset: BigInt(cursor),
              snapshot,
            },
          };
          continue;
        }
        if (scrollback.end - cursor >= bulkBytes && scrollback.end - cursor < maxChunkBytes) {
          await bulkWait(session);
          if (cursor < scrollback.start) continue;
        }
        const data = scrollback.read(cursor, maxChunkBytes);
        const offset = cursor;
        cursor += data.length;
        position.advance(cursor);
        lastSent = Date.now();
        yield { case: "output", value: { $typeName: "devex.runner.v1.SessionOutput", data, offset: BigInt(offset) } };
        continue;
      }
      const exit = session.exit;
      if (exit && cursor >= exit.offset) {
        yield {
          case: "exit",
          value: {
            $typeName: "devex.runner.v1.SessionExited",
            status: exitStatusOf(exit),
            exitedAt: timestampFromDate(exit.at),
            offset: BigInt(exit.offset),
            reason: exit.reason,
          },
        };
        return;
      }
      const waitMs = options.keepaliveMs - (Date.now() - lastSent);
      if (waitMs <= 0) {
        lastSent = Date.now();
        yield { case: "keepalive", value: create(KeepaliveSchema, { sentAt: timestampFromDate(new Date()) }) };
        continue;
      }
      // A timer left from an earlier wait fires no later than this wait needs: keep it.
      keepaliveTimer ??= setTimeout(() => {
        keepaliveTimer = undefined;
        notify();
      }, waitMs);
      await new Promise<void>((resolve) => {
        resume = resolve;
      });
    }
  } finally {
    unwatch();
    position.close();
    options.signal.removeEventListener("abort", gone);
    clearTimeout(keepaliveTimer);
  }
}

/**
 * Waits {@link bulkDelayMs} for more output to batch, or less if the PTY pauses meanwhile: a paused
 * PTY sends nothing more until this client reads what is there.
 */
function bulkWait(session: TerminalSession): Promise<void> {
  if (session.backpressure.isPaused) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      unwatch();
      resolve();
    };
    const timer = setTimeout(done, bulkDelayMs);
    const unwatch = session.watch(() => {
      if (session.backpressure.isPaused) done();
    });
  });
}
