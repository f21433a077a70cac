/**
 * The baselines of `bench:core`'s GetRepl figures: ReplService.GetRepl answering a fixed
 * repl, with no authentication and no state store, served by one of three layers
 * (`--layer`):
 *
 *   kit       the same server kit as core (protocols, logging, metrics, validation): what
 *             core adds over this is its own cost (the default)
 *   connect   connect-node alone, with no server kit: the floor of the gRPC library
 *   http2     node:http2 alone, writing one prepared gRPC response frame and its trailers
 *             for every request: what any gRPC server on Node must at least do
 *
 * Logs `{"msg":"listening","port":N}` once it listens, as the services do.
 */
import * as http2 from "node:http2";
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { GetReplResponseSchema, ReplSchema, ReplService, ReplState } from "@devex/gen/devex/core/v1/repl_pb.js";
import { createLogger, startServer } from "@devex/kit";

const { values } = parseArgs({
  options: { layer: { type: "string", default: "kit" }, port: { type: "string", default: "0" } },
});
const port = Number(values.port);
const repl = create(ReplSchema, { id: `repl_${"0".repeat(26)}`, name: "bench", state: ReplState.STOPPED, version: 1n });

function http2Alone(): http2.Http2Server {
  const message = toBinary(GetReplResponseSchema, create(GetReplResponseSchema, { repl }));
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  const server = http2.createServer();
  server.on("stream", (stream) => {
    stream.resume();
    stream.once("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(frame);
    });
  });
  return server;
}

function connectAlone(): http2.Http2Server {
  return http2.createServer(
    connectNodeAdapter({ routes: (router) => router.service(ReplService, { getRepl: () => ({ repl }) }) }),
  );
}

if (values.layer === "kit") {
  await startServer({
    name: "stub-core",
    logger: createLogger({ service: "stub-core", level: "info" }),
    port,
    routes: (router) => router.service(ReplService, { getRepl: () => ({ repl }) }),
  });
} else {
  const layers: Record<string, () => http2.Http2Server> = { connect: connectAlone, http2: http2Alone };
  const make = layers[values.layer];
  if (!make) throw new Error(`--layer must be kit, ${Object.keys(layers).join(" or ")}`);
  const server = make();
  server.listen(port, "127.0.0.1", () => {
    const address = server.address();
    if (address && typeof address === "object") console.log(JSON.stringify({ msg: "listening", port: address.port }));
  });
  process.once("SIGTERM", () => server.close(() => process.exit(0)));
}
