import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type AttachRequest,
  type AttachResponse,
  AttachResponseSchema,
  CloseSessionResponseSchema,
  CreateSessionResponseSchema,
  GetScreenResponseSchema,
  GetSessionResponseSchema,
  ListSessionsResponseSchema,
  ResizeSessionResponseSchema,
  ScreenSnapshotSchema,
  type SessionSpec,
  SessionState,
  StreamOutputResponseSchema,
  type TerminalService,
  WriteInputResponseSchema,
} from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { assertAcceptingWork, type RunnerContext } from "../context.js";
import { pageOf } from "../pagination.js";
import { toNodeSignal } from "../signals.js";
import { sessionInfo } from "./convert.js";
import { follow, startPosition } from "./follow.js";
import type { TerminalSession } from "./session.js";
import { type SessionRequest, SessionTable } from "./table.js";

/** The terminal sessions of one runner. */
export interface TerminalPart {
  impl: ServiceImpl<typeof TerminalService>;
  /** Sessions that exist right now (running or exited but retained). */
  count(): number;
  /** Sessions whose program is still running. */
  running(): number;
  /** Sessions busy right now: their shell is running a command in the foreground. */
  busy(): Promise<number>;
  /** Ends every session: SIGHUP, then SIGKILL after the grace period. */
  shutdown(graceMs: number): Promise<{ closed: number; killed: number }>;
}

/**
 * A client detaches by closing its side of Attach. The stream still carries the output that
 * keeps coming, the answer to the input sent last (`buf curl -d @-` sends its messages and
 * closes at once), and ends once it has sent nothing but keepalives for this long (or with
 * `exit`)...
 */
const detachQuietMs = 2_000;
/** ...and at the latest this long after the client closed its side, however busy the program. */
const detachMaxMs = 10_000;

function requestOf(spec: SessionSpec | undefined): SessionRequest {
  return {
    id: spec?.sessionId ?? "",
    label: spec?.label ?? "",
    command: spec?.command ?? [],
    cwd: spec?.cwd ?? "",
    env: spec?.env ?? {},
    cols: spec?.cols ?? 0,
    rows: spec?.rows ?? 0,
    detachedLifetimeMs: spec?.detachedLifetimeMs ?? 0,
  };
}

/** Creates the TerminalService implementation for a runner. */
export function createTerminalService(ctx: RunnerContext): TerminalPart {
  const table = new SessionTable(ctx);
  const keepaliveMs = ctx.config.keepaliveMs;

  async function* attach(requests: AsyncIterable<AttachRequest>, hctx: HandlerContext) {
    const iterator = requests[Symbol.asyncIterator]();
    const first = await iterator.next();
    if (first.done) return;
    const open = first.value.kind.case === "open" ? first.value.kind.value : undefined;
    if (!open) {
      throw new ConnectError("the first message of Attach must be `open`", Code.InvalidArgument);
    }
    assertAcceptingWork(ctx);
    let session: TerminalSession;
    let created = false;
    if (open.target.case === "sessionId") {
      session = table.get(open.target.value);
    } else {
      const spec = open.target.value;
      if (open.reuseExisting && spec?.sessionId && table.has(spec.sessionId)) {
        session = table.get(spec.sessionId);
      } else {
        session = await table.create(requestOf(spec));
        created = true;
      }
    }
    if (open.cols && open.rows && !session.exit) session.resize(open.cols, open.rows);
    if (open.fromOffset !== undefined && open.fromOffset > BigInt(session.scrollback.end)) {
      throw new ConnectError(
        `from_offset ${open.fromOffset} is beyond the session's output (${session.scrollback.end} bytes)`,
        Code.OutOfRange,
      );
    }
    const detach = session.attach();
    let start: Awaited<ReturnType<typeof startPosition>>;
    try {
      start = await startPosition(
        session,
        open.fromOffset === undefined ? undefined : Number(open.fromOffset),
        open.screenSnapshot,
        created,
      );
    } catch (error) {
      detach();
      throw error;
    }

    const pongs: AttachResponse["event"][] = [];
    let wakeOutput: () => void = () => {};
    let inputError: unknown;
    let lastSentAt = Date.now();
    const detached = new AbortController();
    let detachTimer: NodeJS.Timeout | undefined;
    let ended = false;
    const detachWhenQuiet = () => {
      if (ended) return;
      const latestAt = Date.now() + detachMaxMs;
      const check = () => {
        const now = Date.now();
        const quietMs = now - lastSentAt;
        if (quietMs >= detachQuietMs || now >= latestAt) return detached.abort();
        detachTimer = setTimeout(check, Math.min(detachQuietMs - quietMs, latestAt - now));
      };
      lastSentAt = Date.now();
      check();
    };
    const pumpInput = async () => {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        const kind = next.value.kind;
        switch (kind.case) {
          case "input":
            session.write(kind.value.data);
            break;
          case "resize":
            session.resize(kind.value.cols, kind.value.rows);
            break;
          case "ping":
            pongs.push({ case: "pong", value: { $typeName: "devex.runner.v1.AttachPong", nonce: kind.value.nonce } });
            wakeOutput();
            break;
          default:
            throw new ConnectError("`open` may only be the first message of Attach", Code.InvalidArgument);
        }
      }
    };
    pumpInput().then(detachWhenQuiet, (error: unknown) => {
      inputError = error;
      wakeOutput();
    });
    try {
      const events = follow(session, start, {
        snapshots: open.screenSnapshot,
        keepaliveMs,
        signal: AbortSignal.any([hctx.signal, detached.signal]),
        extra: {
          take: () => pongs.shift(),
          onReady: (wake) => {
            wakeOutput = wake;
          },
        },
      });
      for await (const event of events) {
        if (inputError !== undefined) throw inputError;
        yield create(AttachResponseSchema, { event });
        if (event.case !== "keepalive") lastSentAt = Date.now();
      }
      if (inputError !== undefined) throw inputError;
    } finally {
      ended = true;
      clearTimeout(detachTimer);
      detach();
    }
  }

  const impl: ServiceImpl<typeof TerminalService> = {
    async createSession(req) {
      const session = await table.create(requestOf(req.spec));
      return create(CreateSessionResponseSchema, { session: sessionInfo(session) });
    },
    getSession(req) {
      return create(GetSessionResponseSchema, { session: sessionInfo(table.get(req.sessionId)) });
    },
    listSessions(req) {
      const wanted = table.list().filter(({ session }) => {
        if (req.state === SessionState.UNSPECIFIED) return true;
        return (req.state === SessionState.EXITED) === (session.exit !== undefined);
      });
      const page = pageOf(wanted, (e) => e.seq, req.pageSize, req.pageToken);
      return create(ListSessionsResponseSchema, {
        sessions: page.items.map((e) => sessionInfo(e.session)),
        nextPageToken: page.nextPageToken,
      });
    },
    resizeSession(req) {
      const session = table.get(req.sessionId);
      session.resize(req.cols, req.rows);
      return create(ResizeSessionResponseSchema, { session: sessionInfo(session) });
    },
    async writeInput(req) {
      const session = table.get(req.sessionId);
      if (!req.clientId) {
        session.write(req.data);
        return create(WriteInputResponseSchema, { nextSeq: 0n });
      }
      const nextSeq = await session.input.write(req.clientId, req.seq, req.data);
      return create(WriteInputResponseSchema, { nextSeq });
    },
    async closeSession(req) {
      const signal = req.force ? "SIGKILL" : toNodeSignal(req.signal, "SIGHUP");
      const session = await table.close(req.sessionId, signal, req.gracePeriodMs || 5_000);
      return create(CloseSessionResponseSchema, { session: sessionInfo(session) });
    },
    attach,
    async *streamOutput(req, hctx) {
      const session = table.get(req.sessionId);
      if (req.fromOffset !== undefined && req.fromOffset > BigInt(session.scrollback.end)) {
        throw new ConnectError(
          `from_offset ${req.fromOffset} is beyond the session's output (${session.scrollback.end} bytes)`,
          Code.OutOfRange,
        );
      }
      const detach = session.attach();
      try {
        const start = await startPosition(
          session,
          req.fromOffset === undefined ? undefined : Number(req.fromOffset),
          req.screenSnapshot,
          false,
        );
        for await (const event of follow(session, start, {
          snapshots: req.screenSnapshot,
          keepaliveMs,
          signal: hctx.signal,
        })) {
          if (event.case === "pong" || event.case === undefined) continue;
          yield create(StreamOutputResponseSchema, { event });
        }
      } finally {
        detach();
      }
    },
    async getScreen(req) {
      const session = table.get(req.sessionId);
      const text = await session.screen.text(req.scrollbackLines);
      const snapshot = req.includeSnapshot ? await session.screen.snapshot() : undefined;
      return create(GetScreenResponseSchema, {
        lines: text.lines,
        scrollback: text.scrollback,
        cursorRow: text.cursorRow,
        cursorCol: text.cursorCol,
        cols: text.cols,
        rows: text.rows,
        alternateScreen: text.alternateScreen,
        offset: BigInt(text.offset),
        snapshot: snapshot
          ? create(ScreenSnapshotSchema, {
              data: snapshot.data,
              cols: snapshot.cols,
              rows: snapshot.rows,
              offset: BigInt(snapshot.offset),
            })
          : undefined,
      });
    },
  };

  return {
    impl,
    count: () => table.size,
    running: () => table.running(),
    busy: () => table.busy(),
    shutdown: (graceMs) => table.shutdown(graceMs),
  };
}
