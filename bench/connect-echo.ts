/**
 * The floor of the Attach protocol on this machine: TerminalService.Attach served by
 * connect-node with nothing else (no PTY, no authentication, no interceptors), echoing
 * each input message back as one output message. Started by bench/terminal.ts as its own
 * process, like a runner; prints its port on stdout. Its round trip is what Connect and
 * HTTP/2 alone cost, before a terminal is involved.
 */
import * as http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AttachResponseSchema, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";

const handler = connectNodeAdapter({
  routes(router) {
    router.rpc(TerminalService.method.attach, async function* (requests) {
      let offset = 0n;
      for await (const request of requests) {
        if (request.kind.case === "open") {
          yield create(AttachResponseSchema, { event: { case: "attached", value: { offset } } });
        } else if (request.kind.case === "input") {
          const data = request.kind.value.data;
          yield create(AttachResponseSchema, { event: { case: "output", value: { data, offset } } });
          offset += BigInt(data.length);
        }
      }
    });
  },
});
const server = http2.createServer(handler);
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  if (address && typeof address === "object") console.log(address.port);
});
