/**
 * The floors under `bench:core`'s GetRepl figures: ReplService.GetRepl answering a fixed repl
 * with nothing of ours in the way. `--floor connect` serves it with connect-node alone (no
 * server kit: no logging, metrics, validation, authentication or store); `--floor http2`
 * with node:http2 alone, writing one prepared gRPC response frame and its trailers for every
 * request, which is what any gRPC server on Node must at least do. Logs
 * `{"msg":"listening","port":N}` once it listens.
 */
import * as http2 from "node:http2";
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { GetReplResponseSchema, ReplSchema, ReplService, ReplState } from "@devex/gen/devex/core/v1/repl_pb.js";

const { values } = parseArgs({ options: { floor: { type: "string" }, port: { type: "string", default: "0" } } });
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

const floors: Record<string, () => http2.Http2Server> = { http2: http2Alone, connect: connectAlone };
const make = floors[values.floor ?? ""];
if (!make) throw new Error(`--floor must be one of ${Object.keys(floors).join(", ")}`);
const server = make();
server.listen(Number(values.port), "127.0.0.1", () => {
  const address = server.address();
  if (address && typeof address === "object") console.log(JSON.stringify({ msg: "listening", port: address.port }));
});
process.once("SIGTERM", () => server.close(() => process.exit(0)));
