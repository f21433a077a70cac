import { freePort } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliHarness, startCliHarness } from "./harness.js";

let h: CliHarness;
let previewPort: number;

beforeAll(async () => {
  previewPort = await freePort();
  h = await startCliHarness(["--preview-port", String(previewPort)]);
  await h.login();
  const created = await h.devex(["create", "web", "--template", "node"]);
  if (created.status !== 0) throw new Error(created.stderr);
});
afterAll(async () => {
  await h?.close();
});

describe("previews from the command line", () => {
  it("prints a private preview URL for the repl's first port, or a named one", async () => {
    const opened = await h.devex(["open", "web"]);
    expect(opened.status).toBe(0);
    expect(opened.stdout).toMatch(
      new RegExp(`^http://3000-repl-[0-9a-z]{26}\\.localhost:${previewPort}/\\?devex_preview_token=\\S+\\n$`),
    );
    const other = await h.devex(["open", "web", "8080", "--json"]);
    expect(JSON.parse(other.stdout)).toMatchObject({ port: 8080, url: expect.stringMatching(/^http:\/\/8080-repl-/) });
  });

  it("lists ports with their visibility and changes it", async () => {
    const listed = await h.devex(["ports", "web"]);
    expect(listed.status).toBe(0);
    const [header, row] = listed.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^PORT\s+NAME\s+PROTOCOL\s+VISIBILITY$/);
    expect(row).toMatch(/^3000\s+web\s+http\s+private$/);

    const made = await h.devex(["ports", "web", "3000", "--public"]);
    expect(made.status).toBe(0);
    expect(made.stderr + made.stdout).toContain("Port 3000 of web is public");
    const json = await h.devex(["ports", "web", "--json"]);
    expect(JSON.parse(json.stdout)).toEqual([{ number: 3000, name: "web", protocol: "http", public: true }]);
    // A public port's URL carries no token.
    expect((await h.devex(["open", "web"])).stdout).toMatch(/^http:\/\/3000-repl-[0-9a-z]{26}\.localhost:\d+\/\n$/);

    expect((await h.devex(["ports", "web", "3000", "--private"])).status).toBe(0);
    expect((await h.devex(["ports", "web"])).stdout).toMatch(/3000\s+web\s+http\s+private/);
  });

  it("refuses bad usage with exit status 2", async () => {
    for (const args of [
      ["open", "web", "70000"],
      ["ports", "web", "3000"],
      ["ports", "web", "--public"],
      ["ports", "web", "3000", "--public", "--private"],
    ]) {
      const result = await h.devex(args);
      expect(result.status, args.join(" ")).toBe(2);
      expect(result.stderr).toMatch(/^devex: /);
    }
  });
});
