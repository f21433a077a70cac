import { execFile } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const sdk = join(import.meta.dirname, "..");
const exec = promisify(execFile);

describe("the API reference", () => {
  it("is generated from the doc comments by TypeDoc, without warnings, with the public API in it", async () => {
    await rm(join(sdk, "docs"), { recursive: true, force: true });
    const { stdout, stderr } = await exec("npm", ["run", "--silent", "docs"], { cwd: sdk });
    const output = `${stdout}\n${stderr}`;
    expect(output).toMatch(/Found 0 errors and 0 warnings|html generated/);
    expect(output).not.toContain("[warning]");
    const devex = await readFile(join(sdk, "docs", "classes", "Devex.html"), "utf8");
    expect(devex).toContain("templates");
    const repl = await readFile(join(sdk, "docs", "classes", "Repl.html"), "utf8");
    // A documented duration says its unit.
    expect(repl).toContain("idleTimeoutMs");
    expect(repl).toMatch(/in ms/);
    for (const page of ["NotFoundError", "RateLimitError", "TimeoutError"]) {
      await expect(readFile(join(sdk, "docs", "classes", `${page}.html`), "utf8")).resolves.toContain(page);
    }
    // Generated (protobuf) types stay out of the public reference.
    const index = await readFile(join(sdk, "docs", "modules.html"), "utf8");
    expect(index).not.toMatch(/ReplSchema|GetReplRequest|devex\.core\.v1/);
  }, 60_000);
});
