/**
 * The baseline of `bench:core`: the same server kit (protocols, logging, metrics,
 * validation) answering ReplService.GetRepl with a fixed repl, with no authentication and
 * no state store. What core adds over this is its own cost.
 */
import { create } from "@bufbuild/protobuf";
import { ReplSchema, ReplService, ReplState } from "@devex/gen/devex/core/v1/repl_pb.js";
import { createLogger, startServer } from "@devex/kit";

const repl = create(ReplSchema, { id: `repl_${"0".repeat(26)}`, name: "bench", state: ReplState.STOPPED, version: 1n });
const logger = createLogger({ service: "stub-core", level: "info" });
await startServer({
  name: "stub-core",
  logger,
  port: 0,
  routes: (router) => router.service(ReplService, { getRepl: () => ({ repl }) }),
});
