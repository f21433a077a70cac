import { create } from "@bufbuild/protobuf";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type AttachRequest, AttachRequestSchema, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { Channel } from "../runner/src/channel.js";

const [url, token, file, size] = process.argv.slice(2) as [string, string, string, string];
const auth: Interceptor = (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};
const client = createClient(TerminalService, createGrpcTransport({ baseUrl: url, interceptors: [auth] }));
const requests = new Channel<AttachRequest>();
requests.push(
  create(AttachRequestSchema, {
    kind: {
      case: "open",
      value: {
        target: {
          case: "create",
          value: { command: ["bash", "-c", `stty raw -echo; head -c 1 >/dev/null; exec cat ${file}`] },
        },
      },
    },
  }),
);
let got = 0;
let t0 = 0;
let msgs = 0;
const total = Number(size);
const done = (async () => {
  for await (const r of client.attach(requests)) {
    if (r.event.case === "output") {
      got += r.event.value.data.length;
      msgs++;
      if (got >= total) return;
    }
  }
})();
await new Promise((r) => setTimeout(r, 500));
t0 = performance.now();
requests.push(create(AttachRequestSchema, { kind: { case: "input", value: { data: new Uint8Array([10]) } } }));
await done;
const s = (performance.now() - t0) / 1000;
console.log("MB/s", (total / 1048576 / s).toFixed(1), "msgs", msgs, "avg", (total / msgs) | 0);
process.exit(0);
