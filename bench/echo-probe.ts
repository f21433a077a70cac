import * as http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { type ConnectRouter, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
} from "@devex/gen/grpc/reflection/v1/reflection_pb.js";
import { createLogger, startServer } from "@devex/kit";
import { Channel } from "../runner/src/channel.js";

const mode = process.argv[2];
if (mode === "server-kit" || mode === "server-bare") {
  const routes = (router: ConnectRouter) =>
    router.service(ServerReflection, {
      async *serverReflectionInfo(reqs) {
        for await (const r of reqs) yield create(ServerReflectionResponseSchema, { validHost: r.host });
      },
    });
  if (mode === "server-kit") {
    const s = await startServer({
      name: "echo",
      logger: createLogger({ service: "echo", level: "warn" }),
      port: 18222,
      routes,
      compression: false,
    });
  } else if (process.env.X_WIN) {
    const h2 = http2.createServer({ settings: { initialWindowSize: 4 * 1024 * 1024 } }, connectNodeAdapter({ routes }));
    h2.on("session", (session) => session.setLocalWindowSize?.(8 * 1024 * 1024));
    h2.listen(18222);
  } else if (process.env.X_SNIFF) {
    const h2 = http2.createServer(connectNodeAdapter({ routes }));
    const net = await import("node:net");
    net
      .createServer((socket) => {
        socket.once("data", (chunk) => {
          socket.pause();
          socket.unshift(chunk);
          h2.emit("connection", socket);
        });
      })
      .listen(18222);
  } else if (process.env.X_EMIT) {
    const h2 = http2.createServer(connectNodeAdapter({ routes }));
    const net = await import("node:net");
    net
      .createServer((socket) => {
        h2.emit("connection", socket);
      })
      .listen(18222);
  } else {
    http2.createServer(connectNodeAdapter({ routes })).listen(18222);
  }
} else {
  const client = createClient(ServerReflection, createGrpcTransport({ baseUrl: "http://127.0.0.1:18222" }));
  const requests = new Channel<ServerReflectionRequest>();
  let waiting: ((h: string) => void) | undefined;
  const it = client.serverReflectionInfo(requests)[Symbol.asyncIterator]();
  void (async () => {
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      waiting?.(r.value.validHost);
    }
  })();
  const times: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const h = `h${i}`;
    const p = new Promise<void>((res) => {
      waiting = (g) => {
        if (g === h) res();
      };
    });
    const t0 = process.hrtime.bigint();
    requests.push(create(ServerReflectionRequestSchema, { host: h }));
    await p;
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  console.log(mode, "p50", times[1500], "p99", times[2970]);
  process.exit(0);
}
