import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { createLogger, type Server } from "@devex/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestRunner, type TestRunner } from "../../../runner/test/harness.js";
import { newId } from "../src/ids.js";
import { createReplProxy, type ReplProxy, startReplOrigin } from "../src/routing/proxy.js";

const logger = createLogger({ service: "core", level: process.env.DEVEX_TEST_LOG_LEVEL ?? "silent" });
/** A repl whose "runner" is a stand-in that records the headers it gets. */
const recordedReplId = newId("repl");
let recorder: http2.Http2Server;
const received: http2.IncomingHttpHeaders[] = [];
let runner: TestRunner;
let proxy: ReplProxy;
let origin: Server;

/** What a browser on the default setup sends the repl origin: the API's cookies come along (same host). */
const browserCredentials = {
  cookie: "devex_session=ses_secret.api-session; devex_login=login-state; theme=dark",
  "proxy-authorization": "Basic cHJveHk6c2VjcmV0",
};

beforeAll(async () => {
  recorder = http2.createServer((req, res) => {
    received.push({ ...req.headers });
    req.resume();
    // A trailers-only gRPC OK, with a cookie for the shared host that must not reach the browser.
    res.writeHead(200, {
      "content-type": "application/grpc",
      "grpc-status": "0",
      "set-cookie": "devex_session=planted",
    });
    res.end();
  });
  await new Promise<void>((resolve) => recorder.listen(0, "127.0.0.1", resolve));
  runner = await startTestRunner();
  proxy = createReplProxy({
    logger,
    async resolve(replId) {
      if (replId === runner.replId) return runner.url;
      if (replId === recordedReplId) return `http://127.0.0.1:${(recorder.address() as AddressInfo).port}`;
      return undefined;
    },
  });
  origin = await startReplOrigin({ port: 0, logger, proxy, shutdownGraceMs: 500 });
});

afterAll(async () => {
  await origin?.close(500);
  await proxy?.close();
  await runner?.close();
  await new Promise((resolve) => recorder?.close(resolve));
});

/** A gRPC call with `headers` to the stand-in over h2c; the headers of the answer. */
async function callOverH2(headers: http2.OutgoingHttpHeaders): Promise<http2.IncomingHttpHeaders> {
  const session = http2.connect(origin.url);
  try {
    const stream = session.request({
      ":method": "POST",
      ":path": `/${recordedReplId}/grpc.health.v1.Health/Check`,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    const answer = new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      stream.once("response", resolve);
      stream.once("error", reject);
    });
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
    stream.resume();
    return await answer;
  } finally {
    session.close();
  }
}

/** The same as a browser's Connect call over HTTP/1.1. */
async function callOverH1(headers: http.OutgoingHttpHeaders): Promise<http.IncomingHttpHeaders> {
  const url = new URL(`${origin.url}/${recordedReplId}/grpc.health.v1.Health/Check`);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: "POST", headers: { "content-type": "application/json", "connect-protocol-version": "1", ...headers } },
      (res) => {
        res.resume();
        resolve(res.headers);
      },
    );
    req.once("error", reject);
    req.end("{}");
  });
}

describe("the repl origin forwards no credential but the runner token", () => {
  it("strips cookies, proxy credentials and an API key on h2c and HTTP/1.1, keeps a runner token, and drops a runner's Set-Cookie", async () => {
    const token = await runner.token("user");
    const apiKey = "Bearer dvx_0123456789abcdef_secretsecretsecret";
    received.length = 0;
    const h2Answer = await callOverH2({ ...browserCredentials, authorization: `Bearer ${token}`, "x-trace": "kept" });
    const h1Answer = await callOverH1({ ...browserCredentials, authorization: apiKey, "x-trace": "kept" });
    expect(received).toHaveLength(2);
    const [viaH2, viaH1] = received;
    for (const seen of [viaH2, viaH1]) {
      expect(seen?.cookie).toBeUndefined();
      expect(seen?.["proxy-authorization"]).toBeUndefined();
      expect(seen?.["x-trace"]).toBe("kept");
    }
    expect(viaH2?.authorization).toBe(`Bearer ${token}`);
    expect(viaH1?.authorization).toBeUndefined();
    expect(h2Answer["set-cookie"]).toBeUndefined();
    expect(h1Answer["set-cookie"]).toBeUndefined();
  });

  it("still serves a real runner's calls that carry the browser's cookies next to the runner token", async () => {
    const token = await runner.token("user");
    const files = createClient(
      FilesystemService,
      createGrpcTransport({
        baseUrl: `${origin.url}/${runner.replId}`,
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${token}`);
            req.header.set("cookie", browserCredentials.cookie);
            return next(req);
          },
        ],
      }),
    );
    const stat = await files.stat({ path: "." });
    expect(stat.entry).toBeDefined();
  });
});
