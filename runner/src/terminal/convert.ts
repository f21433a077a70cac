import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type ExitStatus, ExitStatusSchema } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { type Session, SessionSchema, SessionState } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import type { SessionExit, TerminalSession } from "./session.js";

/** The contract's ExitStatus of a session's exit. */
export function exitStatusOf(exit: SessionExit): ExitStatus {
  return create(ExitStatusSchema, { exitCode: exit.exitCode, signal: exit.signal ?? "" });
}

/** The contract's Session for a session. */
export function sessionInfo(session: TerminalSession): Session {
  const exit = session.exit;
  const expiresAt = session.expiresAt;
  return create(SessionSchema, {
    id: session.id,
    label: session.label,
    command: session.command,
    cwd: session.relativeCwd,
    pid: session.pid,
    cols: session.cols,
    rows: session.rows,
    state: exit ? SessionState.EXITED : SessionState.RUNNING,
    exit: exit ? exitStatusOf(exit) : undefined,
    createdAt: timestampFromDate(session.createdAt),
    exitedAt: exit ? timestampFromDate(exit.at) : undefined,
    attachedClients: session.attachedClients,
    outputOffset: BigInt(session.scrollback.end),
    oldestRetainedOffset: BigInt(session.scrollback.start),
    lastActivityAt: timestampFromDate(new Date(session.lastActivityMs)),
    detachedLifetimeMs: session.detachedLifetimeMs,
    expiresAt: expiresAt ? timestampFromDate(expiresAt) : undefined,
  });
}
