import type { ServiceImpl } from "@connectrpc/connect";
import type { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import type { RunnerContext } from "../context.js";

/** The filesystem of one workspace, confined to it. */
export interface FilesystemPart {
  impl: Partial<ServiceImpl<typeof FilesystemService>>;
  /** Ends every watch. */
  close(): Promise<void>;
}

/** Creates the FilesystemService implementation for a runner. */
export function createFilesystemService(_ctx: RunnerContext): FilesystemPart {
  return { impl: {}, close: async () => {} };
}
