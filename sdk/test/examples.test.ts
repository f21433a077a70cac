import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LiveCore, startLiveCore } from "./support/live.js";

const run = promisify(execFile);
const examples = join(import.meta.dirname, "..", "examples");
const tsx = join(import.meta.dirname, "..", "..", "node_modules", ".bin", "tsx");

let live: LiveCore;
beforeAll(async () => {
  live = await startLiveCore();
});
afterAll(async () => {
  await live?.close();
});

/** Runs an example as a user would, configured through the environment; returns what it printed. */
async function runExample(file: string): Promise<string> {
  const { stdout } = await run(tsx, [join(examples, file)], {
    env: { ...process.env, DEVEX_BASE_URL: live.core.url, DEVEX_API_KEY: live.apiKey },
    timeout: 30_000,
  });
  return stdout;
}

describe("examples/", () => {
  it("quick-start.ts creates, starts, runs, writes, reads and stops", async () => {
    const output = await runExample("quick-start.ts");
    expect(output).toContain("templates: blank, node, python");
    expect(output).toContain("state: running");
    expect(output).toContain("stdout: 42 exit: 0");
    expect(output).toContain("file: Hello from the SDK");
    expect(output).toMatch(/stopped: stopped saved: snap_[0-9a-z]{26}/);
  });

  it("terminal.ts types into a shell and sees its output", async () => {
    const output = await runExample("terminal.ts");
    expect(output).toContain("saw size: true");
    expect(output).toContain("saw sum: true");
    expect(output).toContain("exit code: 3");
  });

  it("files.ts uploads, watches and downloads", async () => {
    const output = await runExample("files.ts");
    expect(output).toContain(`uploaded: ${3 * 1024 * 1024} bytes`);
    expect(output).toContain(`blob.bin:${3 * 1024 * 1024}`);
    expect(output).toMatch(/watched: (write|create)/);
    expect(output).toContain(`downloaded: ${3 * 1024 * 1024} bytes, identical: true`);
  });
});
