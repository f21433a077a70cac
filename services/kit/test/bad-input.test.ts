import * as http2 from "node:http2";
import { Writable } from "node:stream";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Server, startServer } from "../src/index.js";

/** The log lines the server wrote. */
const lines: Record<string, unknown>[] = [];
let server: Server;

beforeAll(async () => {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  server = await startServer({
    name: "test",
    logger: pino({ level: "info" }, sink),
    port: 0,
    routes: (router) =>
      router.service(FilesystemService, {
        stat() {
          throw new Error("a bug of ours");
        },
      }),
  });
});

afterAll(async () => {
  await server?.close(100);
});

/** One request over h2c with `body` as is; resolves with the code it got (a number or a Connect code name). */
function rawCall(path: string, headers: Record<string, string>, body: Buffer): Promise<string | undefined> {
  return new Promise((resolve) => {
    const session = http2.connect(server.url);
    const stream = session.request({ ":method": "POST", ":path": path, te: "trailers", ...headers });
    let code: string | undefined;
    let text = "";
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h["grpc-status"] !== undefined) code = String(h["grpc-status"]);
    };
    stream.on("response", take);
    stream.on("trailers", take);
    stream.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
    });
    stream.on("close", () => {
      session.close();
      code ??= /grpc-status: *(\d+)/.exec(text)?.[1] ?? /"code": *"([a-z_]+)"/.exec(text)?.[1];
      resolve(code);
    });
    stream.end(body);
  });
}

function envelope(payload: number[], flags = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, Buffer.from(payload)]);
}

/** A truncated varint, and a string field (`path`, `service`) holding 0xff, which is not UTF-8. */
const inputs: Record<string, number[]> = { undecodable: [0xff, 0xff, 0xff], "invalid UTF-8": [0x0a, 0x01, 0xff] };
const stat = "/devex.runner.v1.FilesystemService/Stat";
const watch = "/grpc.health.v1.Health/Watch";
const invalidArgument = [String(Code.InvalidArgument), "invalid_argument"];

describe("bad input is invalid_argument (issue 16, case 5)", () => {
  for (const [name, payload] of Object.entries(inputs)) {
    it(`answers ${name} messages with invalid_argument over gRPC, gRPC-web and Connect`, async () => {
      const answers = {
        grpc: await rawCall(stat, { "content-type": "application/grpc" }, envelope(payload)),
        "grpc-web": await rawCall(stat, { "content-type": "application/grpc-web+proto" }, envelope(payload)),
        "connect unary": await rawCall(
          stat,
          { "content-type": "application/proto", "connect-protocol-version": "1" },
          Buffer.from(payload),
        ),
        "connect stream": await rawCall(
          watch,
          { "content-type": "application/connect+proto", "connect-protocol-version": "1" },
          envelope(payload),
        ),
      };
      for (const [protocol, code] of Object.entries(answers)) expect(invalidArgument, protocol).toContain(code);
    });
  }

  it("answers the compressed flag without an encoding with invalid_argument", async () => {
    const empty = envelope([], 1);
    const answers = {
      grpc: await rawCall(stat, { "content-type": "application/grpc" }, empty),
      "grpc-web": await rawCall(stat, { "content-type": "application/grpc-web+proto" }, empty),
      "connect stream": await rawCall(
        watch,
        { "content-type": "application/connect+proto", "connect-protocol-version": "1" },
        empty,
      ),
    };
    for (const [protocol, code] of Object.entries(answers)) expect(invalidArgument, protocol).toContain(code);
  });

  it("logs internal errors, our bugs, at error level", async () => {
    const client = createClient(FilesystemService, createGrpcTransport({ baseUrl: server.url }));
    await expect(client.stat({ path: "x" })).rejects.toSatisfy((e) => ConnectError.from(e).code === Code.Internal);
    const logged = lines.find(
      (line) => line.msg === "call failed" && (line.err as { message?: string }).message === "a bug of ours",
    );
    expect(logged?.level).toBe(50);
  });
});
