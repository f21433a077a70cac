import { Code, ConnectError } from "@connectrpc/connect";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { sendOversizedMessage } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestRunner, type TestRunner } from "./harness.js";

const MiB = 1024 * 1024;
let t: TestRunner;

beforeAll(async () => {
  t = await startTestRunner();
});

afterAll(async () => {
  await t?.close();
});

async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("the call succeeded");
}

describe("read limits (issue 16, case 1)", () => {
  it("refuses oversized messages without a token with resource_exhausted naming the limit, before reading them", async () => {
    for (const declaredBytes of [64 * MiB, 256 * MiB]) {
      for (const protocol of ["grpc", "grpc-web", "connect"] as const) {
        const answer = await sendOversizedMessage(t.url, "/devex.runner.v1.FilesystemService/WriteFile", {
          protocol,
          declaredBytes,
        });
        const what = `${protocol} ${declaredBytes}`;
        expect(answer.code, what).toBe(protocol === "connect" ? "resource_exhausted" : String(Code.ResourceExhausted));
        // WriteFile carries up to 4 MiB of content: its limit is twice that and the rest of the
        // request (the JSON form writes bytes as base64), so about 8.4 MB.
        expect(answer.message, what).toMatch(/readMaxBytes 8[0-9]{6}\b/);
        expect(answer.sentBytes, what).toBeLessThan(32 * MiB);
        expect(answer.durationMs, what).toBeLessThan(5_000);
      }
    }
  });
});

describe("limits Linux enforces on a process (issue 16, case 5)", () => {
  const cases: [string, { argv: string[]; env?: Record<string, string> }, RegExp][] = [
    ["an argument over 131,071 bytes", { argv: ["true", "x".repeat(131_072)] }, /131071|131,071/],
    ["arguments over the total", { argv: ["true", ...Array<string>(40).fill("y".repeat(100_000))] }, /E2BIG/],
    ["an environment over the total", { argv: ["true"], env: { A: "z".repeat(100_000), ...bigEnv() } }, /E2BIG/],
    ["a 4,096-byte program", { argv: ["p".repeat(4_096)] }, /4,095/],
  ];

  for (const protocol of ["grpc", "connect-h1"] as const) {
    for (const [name, config, limit] of cases) {
      it(`answers ${name} with invalid_argument naming the limit (${protocol})`, async () => {
        const processes = await t.client(ProcessService, { protocol });
        const run = await failure(processes.runProcess({ config }));
        expect(run.code).toBe(Code.InvalidArgument);
        expect(run.rawMessage).toMatch(limit);
        const start = await failure(
          (async () => {
            for await (const _ of processes.startProcess({ config })) return;
          })(),
        );
        expect(start.code).toBe(Code.InvalidArgument);
      });
    }
  }

  it("answers a 256-byte ignore-file name with invalid_argument naming the limit", async () => {
    const control = await t.client(RunnerService, { role: "core" });
    const error = await failure(
      (async () => {
        for await (const _ of control.exportWorkspace({ ignoreFile: "i".repeat(256) })) return;
      })(),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toContain("255 bytes");
  });
});

/** 30 variables of 100,000 bytes: 3 MB, over Linux's total for arguments and environment. */
function bigEnv(): Record<string, string> {
  return Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`V${i}`, "e".repeat(100_000)]));
}
