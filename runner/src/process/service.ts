import type { ServiceImpl } from "@connectrpc/connect";
import type { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import type { RunnerContext } from "../context.js";

/** The processes of one runner. */
export interface ProcessPart {
  impl: Partial<ServiceImpl<typeof ProcessService>>;
  /** Processes running right now. */
  running(): number;
  /**
   * Ends every running process: SIGTERM to its process group, SIGKILL to those still
   * running after the grace period. Resolves with how many were stopped and how many of
   * them had to be killed.
   */
  shutdown(graceMs: number): Promise<{ stopped: number; killed: number }>;
}

/** Creates the ProcessService implementation for a runner. */
export function createProcessService(_ctx: RunnerContext): ProcessPart {
  return { impl: {}, running: () => 0, shutdown: async () => ({ stopped: 0, killed: 0 }) };
}
