import { once } from "node:events";
import { createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger, type Server, startServer } from "../src/index.js";

// When a call ends without an error, Connect aborts its signals on both sides, and
// AbortController.abort() with no reason builds a DOMException, stack trace and all, for
// every call: about a tenth of a small unary call on a busy server. The project patches
// Connect to abort with one shared AbortError instead (patches/@connectrpc+connect*.patch).
// These tests fail if the patches stop applying, and check that the reason handlers and
// interceptors see is still an AbortError.

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close(100)));
});

async function aborted(signal: AbortSignal): Promise<unknown> {
  if (!signal.aborted) await once(signal, "abort");
  return signal.reason;
}

/** Makes two successful unary calls; returns the reasons of their handler and client signals. */
async function twoCalls(transportFor: (url: string, interceptors: Interceptor[]) => Transport) {
  const handlerSignals: AbortSignal[] = [];
  const server = await startServer({
    name: "test",
    logger: createLogger({ service: "test", level: "silent" }),
    port: 0,
    routes: (router) =>
      router.service(FilesystemService, {
        stat(_req, ctx) {
          handlerSignals.push(ctx.signal);
          return {};
        },
      }),
  });
  servers.push(server);
  const clientSignals: AbortSignal[] = [];
  const capture: Interceptor = (next) => (req) => {
    clientSignals.push(req.signal);
    return next(req);
  };
  const client = createClient(FilesystemService, transportFor(server.url, [capture]));
  await client.stat({ path: "a" });
  await client.stat({ path: "b" });
  return {
    handler: await Promise.all(handlerSignals.map(aborted)),
    client: await Promise.all(clientSignals.map(aborted)),
  };
}

const transports: Record<string, (url: string, interceptors: Interceptor[]) => Transport> = {
  "gRPC over h2c": (baseUrl, interceptors) => createGrpcTransport({ baseUrl, interceptors }),
  "Connect over HTTP/1.1": (baseUrl, interceptors) =>
    createConnectTransport({ baseUrl, interceptors, httpVersion: "1.1" }),
};

describe("the signals of a call that ended without an error", () => {
  for (const [name, transportFor] of Object.entries(transports)) {
    it(`carry one shared AbortError, on the server and on the client (${name})`, async () => {
      const reasons = await twoCalls(transportFor);
      for (const side of ["handler", "client"] as const) {
        const [first, second] = reasons[side];
        expect(first, side).toBeInstanceOf(DOMException);
        expect((first as DOMException).name, side).toBe("AbortError");
        expect(second, side).toBe(first);
      }
    });
  }
});
