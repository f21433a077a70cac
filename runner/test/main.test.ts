import { tmpdir } from "node:os";
import { join } from "node:path";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { bufCurl, type SpawnedService, spawnService } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const services = [TerminalService, FilesystemService, ProcessService, RunnerService];
let runner: SpawnedService;

beforeAll(async () => {
  runner = await spawnService("runner/src/main.ts", [
    "--dev",
    "--workspace",
    join(tmpdir(), `devex-main-test-${process.pid}`),
  ]);
});
afterAll(async () => {
  expect(await runner.stop()).toBe(0);
});

describe("npm run runner", () => {
  it("lists every RPC of the four runner services over h2c with buf curl", async () => {
    const { code, stdout } = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--list-methods",
      runner.url,
    ]);
    expect(code).toBe(0);
    const listed = new Set(stdout.trim().split("\n"));
    const expected = services.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));
    expect(expected.length).toBeGreaterThanOrEqual(30);
    for (const method of expected) expect(listed, method).toContain(method);
  });

  it("reports SERVING through buf curl", async () => {
    const res = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      `${runner.url}/grpc.health.v1.Health/Check`,
    ]);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ status: "SERVING" });
  });
});
