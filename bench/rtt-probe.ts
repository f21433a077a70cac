import { create } from "@bufbuild/protobuf";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type AttachRequest, AttachRequestSchema, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { Channel } from "../runner/src/channel.js";

const [url, token, n] = process.argv.slice(2) as [string, string, string];
const auth: Interceptor = (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

import * as net from "node:net";

const nodelay = process.env.NODELAY === "1";
const u = new URL(url);
const client = createClient(
  TerminalService,
  createGrpcTransport({
    baseUrl: url,
    interceptors: [auth],
    ...(nodelay
      ? {
          nodeOptions: {
            createConnection: () => {
              const s = net.connect(Number(u.port), u.hostname);
              s.setNoDelay(true);
              return s;
            },
          },
        }
      : {}),
  }),
);
const requests = new Channel<AttachRequest>();
requests.push(
  create(AttachRequestSchema, {
    kind: {
      case: "open",
      value: { target: { case: "create", value: { command: ["bash", "-c", "stty raw -echo; exec cat"] } } },
    },
  }),
);
let waiting: ((b: number) => void) | undefined;
const it = client.attach(requests)[Symbol.asyncIterator]();
void (async () => {
  for (;;) {
    const r = await it.next();
    if (r.done) break;
    const e = r.value.event;
    if (e.case === "output") for (const b of e.value.data) waiting?.(b);
  }
})();
await new Promise((r) => setTimeout(r, 500));
const send = (b: number) =>
  requests.push(create(AttachRequestSchema, { kind: { case: "input", value: { data: new Uint8Array([b]) } } }));
const times: number[] = [];
const marks: [string, string, number][] = [];
for (let i = 0; i < Number(n); i++) {
  const b = 0x61 + (i % 26);
  const p = new Promise<void>((res) => {
    waiting = (g) => {
      if (g === b) res();
    };
  });
  const t0 = process.hrtime.bigint();
  send(b);
  await p;
  const t1 = process.hrtime.bigint();
  times.push(Number(t1 - t0) / 1000);
  if (process.env.TRACE) marks.push([String(t0), String(t1), b]);
}
times.sort((a, b) => a - b);
console.log("p50", times[times.length >> 1], "p99", times[Math.floor(times.length * 0.99)]);
if (process.env.TRACE) (await import("node:fs")).writeFileSync("/tmp/client.json", JSON.stringify(marks));
process.exit(0);
