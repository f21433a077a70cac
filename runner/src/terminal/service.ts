import type { ServiceImpl } from "@connectrpc/connect";
import type { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import type { RunnerContext } from "../context.js";

/** The terminal sessions of one runner. */
export interface TerminalPart {
  impl: Partial<ServiceImpl<typeof TerminalService>>;
  /** Sessions that exist right now (running or exited but retained). */
  count(): number;
  /** Ends every session: SIGHUP, then SIGKILL after the grace period. */
  shutdown(graceMs: number): Promise<{ closed: number; killed: number }>;
}

/** Creates the TerminalService implementation for a runner. */
export function createTerminalService(_ctx: RunnerContext): TerminalPart {
  return { impl: {}, count: () => 0, shutdown: async () => ({ closed: 0, killed: 0 }) };
}
