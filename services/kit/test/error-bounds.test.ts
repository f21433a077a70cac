import { create } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { ProcessService, RunProcessResponseSchema } from "@devex/gen/devex/runner/v1/process_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  boundError,
  createLogger,
  maxErrorDetailsBytes,
  maxErrorMessageBytes,
  type Server,
  startServer,
  truncatedMarker,
} from "../src/index.js";

let server: Server;

beforeAll(async () => {
  server = await startServer({
    name: "test",
    logger: createLogger({ service: "test", level: "silent" }),
    port: 0,
    routes: (router) => router.service(ProcessService, { runProcess: () => create(RunProcessResponseSchema, {}) }),
  });
});
afterAll(async () => {
  await server?.close(100);
});

const utf8Length = (text: string) => new TextEncoder().encode(text).length;

describe("error size bounds", () => {
  it("answers Health/Check for a 128 KiB service name with NOT_FOUND and a short message; another stream on the connection lives on", async () => {
    // One transport: one HTTP/2 connection for both calls.
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const abort = new AbortController();
    const statuses: HealthCheckResponse_ServingStatus[] = [];
    const watching = (async () => {
      for await (const res of health.watch({ service: "probe" }, { signal: abort.signal })) statuses.push(res.status);
    })().catch((error: unknown) => ConnectError.from(error));
    await expect.poll(() => statuses.length).toBe(1);

    const error = await health.check({ service: "s".repeat(128 * 1024) }).catch((e: unknown) => ConnectError.from(e));
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.NotFound);
    expect(utf8Length((error as ConnectError).rawMessage)).toBeLessThanOrEqual(maxErrorMessageBytes);
    expect((error as ConnectError).rawMessage).toContain(truncatedMarker);

    // The watch still gets news, and the connection still takes calls.
    server.health.set("probe", HealthCheckResponse_ServingStatus.SERVING);
    await expect
      .poll(() => statuses)
      .toEqual([HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN, HealthCheckResponse_ServingStatus.SERVING]);
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    abort.abort();
    expect(await watching).toMatchObject({ code: Code.Canceled });
  });

  it("answers a request breaking 1,500 validation rules with INVALID_ARGUMENT, a bounded message and the first violations", async () => {
    const argv = ["true", ...Array.from({ length: 1500 }, (_, i) => `argument ${i} \u0000`)];
    for (const transport of [
      createGrpcTransport({ baseUrl: server.url }),
      createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }),
    ]) {
      const process = createClient(ProcessService, transport);
      const error = await process.runProcess({ config: { argv } }).catch((e: unknown) => ConnectError.from(e));
      expect(error).toBeInstanceOf(ConnectError);
      const ce = error as ConnectError;
      expect(ce.code).toBe(Code.InvalidArgument);
      expect(utf8Length(ce.rawMessage)).toBeLessThanOrEqual(maxErrorMessageBytes);
      expect(ce.rawMessage).toContain("(error details truncated)");
      const [violations] = ce.findDetails(ViolationsSchema);
      expect(violations?.violations.length).toBeGreaterThan(0);
      expect(violations?.violations.length).toBeLessThan(1500);
      expect(
        ce.details.reduce((sum, d) => sum + ("value" in d && d.value instanceof Uint8Array ? d.value.length : 0), 0),
      ).toBeLessThanOrEqual(maxErrorDetailsBytes);
    }
  });

  it("leaves a small error as it is and keeps the code, metadata and cause of one it cuts", () => {
    const small = new ConnectError("nope", Code.NotFound);
    expect(boundError(small)).toBe(small);
    const bug = new Error("a bug");
    expect(boundError(bug)).toBe(bug);
    const cause = new Error("disk");
    const big = new ConnectError("x".repeat(10_000), Code.FailedPrecondition, { "x-why": "because" }, [], cause);
    const bounded = boundError(big) as ConnectError;
    expect(bounded.code).toBe(Code.FailedPrecondition);
    expect(bounded.metadata.get("x-why")).toBe("because");
    expect(bounded.cause).toBe(cause);
    expect(bounded.rawMessage.endsWith(truncatedMarker)).toBe(true);
    // A character is never cut in half.
    const wide = boundError(new ConnectError("é".repeat(5_000))) as ConnectError;
    expect(wide.rawMessage).toMatch(/^é+… \(truncated\)$/);
  });
});
