import { readFile } from "node:fs/promises";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code } from "@connectrpc/connect";
import { createLogger, type Server } from "@devex/kit";
import { sendOversizedMessage } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newId } from "../src/ids.js";
import { createReplProxy, type ReplProxy, startReplOrigin } from "../src/routing/proxy.js";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";

const MiB = 1024 * 1024;
const listRepls = "/devex.core.v1.ReplService/ListRepls";

/** The resident set of process `pid`, in bytes. */
async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024;
}

describe("read limits of core (issue 16, case 1)", () => {
  let core: CoreProcess;

  beforeAll(async () => {
    core = await startCoreProcess();
  });

  afterAll(async () => {
    await core?.stop();
    await core?.cleanup();
  });

  it("refuses a 64 MiB ListRepls without credentials with resource_exhausted naming the limit, before reading it", async () => {
    for (const protocol of ["grpc", "grpc-web", "connect"] as const) {
      const answer = await sendOversizedMessage(core.url, listRepls, { protocol, declaredBytes: 64 * MiB });
      const code = protocol === "connect" ? "resource_exhausted" : String(Code.ResourceExhausted);
      expect(answer.code, protocol).toBe(code);
      expect(answer.message, protocol).toContain("1048576");
      expect(answer.durationMs, protocol).toBeLessThan(5_000);
      // Refused on its length prefix: most of the body was never sent.
      expect(answer.sentBytes, protocol).toBeLessThan(32 * MiB);
    }
  });

  it("keeps its memory when 256 MiB messages without credentials are streamed at ListRepls", async () => {
    const pid = core.service.child.pid as number;
    const before = await rssOf(pid);
    for (const protocol of ["grpc", "grpc-web", "connect"] as const) {
      const answer = await sendOversizedMessage(core.url, listRepls, { protocol, declaredBytes: 256 * MiB });
      expect(answer.code, protocol).toBe(
        protocol === "connect" ? "resource_exhausted" : String(Code.ResourceExhausted),
      );
    }
    expect(await rssOf(pid)).toBeLessThan(before + 64 * MiB);
  }, 60_000);
});

describe("the repl origin without a runner token (issue 16, case 1)", () => {
  const replId = newId("repl");
  let upstream: http2.Http2Server;
  /** Paths of the streams the fake runner received, and the body bytes that reached it. */
  const received: string[] = [];
  let receivedBytes = 0;
  let proxy: ReplProxy;
  let origin: Server;

  beforeAll(async () => {
    upstream = http2.createServer((req, res) => {
      received.push(req.url);
      req.on("data", (chunk: Buffer) => {
        receivedBytes += chunk.length;
      });
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/grpc", "grpc-status": "0" });
        res.end();
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const endpoint = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const logger = createLogger({ service: "core", level: "silent" });
    proxy = createReplProxy({ logger, resolve: async (id) => (id === replId ? endpoint : undefined) });
    origin = await startReplOrigin({ port: 0, logger, proxy });
  });

  afterAll(async () => {
    await origin?.close(100);
    await proxy?.close();
    await new Promise((resolve) => upstream?.close(resolve));
  });

  it("refuses a call without a token before its body reaches the runner", async () => {
    for (const protocol of ["grpc", "grpc-web", "connect"] as const) {
      const answer = await sendOversizedMessage(
        `${origin.url}`,
        `/${replId}/devex.runner.v1.FilesystemService/WriteFile`,
        {
          protocol,
          declaredBytes: 64 * MiB,
        },
      );
      expect(answer.code, protocol).toBe(protocol === "connect" ? "unauthenticated" : String(Code.Unauthenticated));
      expect(answer.message, protocol).toContain("token");
    }
    expect(received).toEqual([]);
    expect(receivedBytes).toBe(0);
  });

  it("still forwards health checks without a token, and calls with one", async () => {
    const health = await sendOversizedMessage(origin.url, `/${replId}/grpc.health.v1.Health/Check`, {
      declaredBytes: 0,
    });
    expect(health.code).toBe("0");
    const withToken = await sendOversizedMessage(origin.url, `/${replId}/devex.runner.v1.FilesystemService/Stat`, {
      declaredBytes: 0,
      headers: { authorization: "Bearer x" },
    });
    expect(withToken.code).toBe("0");
    expect(received).toEqual(["/grpc.health.v1.Health/Check", "/devex.runner.v1.FilesystemService/Stat"]);
  });
});
