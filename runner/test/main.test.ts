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

  it("runs echo in a terminal through an Attach stream opened by buf curl, with the dev-mode token", async () => {
    const token = runner.output
      .find((line) => line.includes("user token:"))
      ?.split("user token:")[1]
      ?.trim();
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const input = Buffer.from("echo hello from $((40+2))\rexit\r").toString("base64");
    const messages = [
      JSON.stringify({ open: { create: { command: ["bash", "--norc", "--noprofile", "-i"] } } }),
      JSON.stringify({ input: { data: input } }),
    ].join("\n");
    const res = await bufCurl(
      [
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-H",
        `Authorization: Bearer ${token}`,
        "-d",
        "@-",
        `${runner.url}/devex.runner.v1.TerminalService/Attach`,
      ],
      messages,
    );
    expect(res.code, res.stderr).toBe(0);
    const events = res.stdout
      .split(/\n(?=\{)/)
      .map((chunk) => JSON.parse(chunk) as Record<string, { data?: string; status?: { exitCode?: number } }>);
    const output = events.map((e) => (e.output?.data ? Buffer.from(e.output.data, "base64").toString() : "")).join("");
    expect(output).toContain("hello from 42");
    expect(events.at(-1)?.exit?.status?.exitCode ?? 0).toBe(0);
    expect(Object.keys(events.at(-1) ?? {})).toEqual(["exit"]);
  });

  it("refuses the same call without a token", async () => {
    const res = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      "{}",
      `${runner.url}/devex.runner.v1.TerminalService/ListSessions`,
    ]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("unauthenticated");
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
