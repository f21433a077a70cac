import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { processCgroupDirs } from "../config.js";
import { assertAcceptingWork, type RunnerContext } from "../context.js";
import { defaultShell, workspaceEnvironment } from "../environment.js";
import { assertExecutable } from "../executable.js";
import { assertCgroupsWritable, cgroupShimCommand } from "../process-cgroups.js";
import { resolveWorkingDirectory } from "../working-directory.js";
import { loadEmulator } from "./screen.js";
import { TerminalSession } from "./session.js";

/** What a caller asks for when creating a session; zero values mean defaults. */
export interface SessionRequest {
  id: string;
  label: string;
  command: string[];
  cwd: string;
  env: Record<string, string>;
  cols: number;
  rows: number;
  detachedLifetimeMs: number;
}

interface Entry {
  session: TerminalSession;
  /** Creation order, for stable pagination. */
  seq: number;
  removeTimer?: NodeJS.Timeout;
}

/**
 * The sessions of a runner: creates them within the limits, closes those left without a
 * client for too long, and keeps exited ones listed (with their exit status) for the
 * configured retention.
 */
export class SessionTable {
  private readonly entries = new Map<string, Entry>();
  private seq = 0;

  constructor(private readonly ctx: RunnerContext) {}

  /** Sessions in creation order. */
  list(): { session: TerminalSession; seq: number }[] {
    return [...this.entries.values()];
  }

  get size(): number {
    return this.entries.size;
  }

  /** Sessions whose program is still running. */
  running(): number {
    return this.list().filter((e) => !e.session.exit).length;
  }

  /** Sessions whose program is running a command in the foreground right now (see {@link TerminalSession.busy}). */
  async busy(): Promise<number> {
    const busy = await Promise.all(this.list().map((e) => e.session.busy()));
    return busy.filter(Boolean).length;
  }

  /** The session with this id; NOT_FOUND otherwise. */
  get(id: string): TerminalSession {
    const entry = this.entries.get(id);
    if (!entry) throw new ConnectError(`no terminal session "${id}"`, Code.NotFound);
    return entry.session;
  }

  /** Whether a session with this id exists. */
  has(id: string): boolean {
    return this.entries.has(id);
  }

  /** Starts a session. */
  async create(request: SessionRequest): Promise<TerminalSession> {
    assertAcceptingWork(this.ctx);
    const { config } = this.ctx;
    const id = request.id || `s-${randomBytes(6).toString("hex")}`;
    const { absolute: cwd, relative: relativeCwd } = await resolveWorkingDirectory(
      this.ctx.workspace,
      request.cwd,
      "spec.cwd",
    );
    const command = request.command.length > 0 ? request.command : defaultShell();
    const env = workspaceEnvironment(this.ctx, request.env);
    await assertExecutable(command[0] as string, cwd, env.PATH ?? "");
    // The shim keeps a program that cannot enter its cgroups from running, but in a PTY it
    // can only say so on the terminal: the check here turns the usual causes into an error.
    const cgroups = processCgroupDirs(config);
    await assertCgroupsWritable(cgroups, command[0] as string);
    await loadEmulator();
    // The checks that concurrent creates could race on come after the last await, right
    // before the session is added.
    assertAcceptingWork(this.ctx);
    if (this.entries.has(id)) throw new ConnectError(`terminal session "${id}" already exists`, Code.AlreadyExists);
    const running = this.running();
    if (running >= config.maxSessions) {
      throw new ConnectError(`the runner already has ${running} sessions (the limit)`, Code.ResourceExhausted);
    }
    let session: TerminalSession;
    try {
      session = new TerminalSession(
        {
          id,
          label: request.label,
          command,
          spawnCommand: cgroups.length > 0 ? cgroupShimCommand(cgroups, command, "stderr") : command,
          cwd,
          relativeCwd,
          env,
          cols: request.cols || 80,
          rows: request.rows || 24,
          detachedLifetimeMs: request.detachedLifetimeMs || config.detachedSessionLifetimeMs,
        },
        {
          scrollbackBytes: config.scrollbackBytes,
          activity: this.ctx.activity,
          onExit: (s) => this.retain(s),
          onDetachedTooLong: (s) => {
            this.ctx.logger.info({ session: s.id }, "closing a session left without a client");
            void s.close("SIGHUP", 5_000, "detached lifetime elapsed");
          },
        },
      );
    } catch (error) {
      throw new ConnectError(
        `cannot start ${JSON.stringify(command[0])}: ${(error as Error).message}`,
        Code.Internal,
        undefined,
        undefined,
        error,
      );
    }
    this.entries.set(id, { session, seq: ++this.seq });
    this.ctx.logger.info({ session: id, pid: session.pid }, "terminal session started");
    return session;
  }

  /** Ends a session (if running) and removes it. */
  async close(id: string, signal: NodeJS.Signals, graceMs: number): Promise<TerminalSession> {
    const session = this.get(id);
    await session.close(signal, graceMs, "closed");
    this.remove(id);
    return session;
  }

  /** Ends every running session; resolves with how many were closed and how many killed. */
  async shutdown(graceMs: number): Promise<{ closed: number; killed: number }> {
    const running = this.list().filter((e) => !e.session.exit);
    const results = await Promise.all(running.map((e) => e.session.close("SIGHUP", graceMs, "runner shutdown")));
    return { closed: running.length, killed: results.filter((r) => r.killed).length };
  }

  private retain(session: TerminalSession): void {
    const entry = this.entries.get(session.id);
    if (!entry || entry.session !== session) return;
    entry.removeTimer = setTimeout(() => this.remove(session.id), this.ctx.config.exitRetentionMs);
    entry.removeTimer.unref();
  }

  private remove(id: string): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    clearTimeout(entry.removeTimer);
    entry.session.dispose();
    this.entries.delete(id);
  }
}
