import type { ConnectRouter } from "@connectrpc/connect";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";

/** The services of the runner. Methods without an implementation answer `Unimplemented`. */
export function runnerRoutes(): (router: ConnectRouter) => void {
  return (router) => {
    router.service(TerminalService, {});
    router.service(FilesystemService, {});
    router.service(ProcessService, {});
    router.service(RunnerService, {});
  };
}
