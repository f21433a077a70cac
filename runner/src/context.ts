import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Activity } from "./activity.js";
import type { RunnerConfig } from "./config.js";

/** What every runner service needs to know about the runner it is part of. */
export interface RunnerContext {
  config: RunnerConfig;
  /** The workspace root: an absolute path with symlinks resolved. */
  workspace: string;
  /** The repl served; empty while a standby waits for RunnerService.Assign, which sets it once. */
  replId: string;
  activity: Activity;
  logger: Logger;
  /**
   * Aborted when RunnerService.Shutdown begins draining: from then on, calls that would
   * start new work or change the workspace fail with Unavailable (see {@link assertAcceptingWork}).
   * RunnerService.Resume replaces it with a fresh signal: read it at the time of each call.
   */
  draining: AbortSignal;
}

/** Fails with Unavailable once the runner is draining for shutdown. */
export function assertAcceptingWork(ctx: RunnerContext): void {
  if (ctx.draining.aborted) throw new ConnectError("the runner is shutting down", Code.Unavailable);
}
