import { AuthService, Scope } from "@devex/gen/devex/core/v1/auth_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliHarness, startCliHarness } from "./harness.js";

let h: CliHarness;

beforeAll(async () => {
  h = await startCliHarness();
  await h.login();
});
afterAll(async () => {
  await h?.close();
});

describe("the idle policy from the command line", () => {
  it("creates a repl kept awake and changes its idle timeout with devex update", async () => {
    const created = await h.devex(["create", "job", "--template", "blank", "--idle-timeout", "never", "--json"]);
    expect(created.status, created.stderr).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ name: "job", keepAwake: true });

    const timed = await h.devex(["update", "job", "--idle-timeout", "3600"]);
    expect(timed.status, timed.stderr).toBe(0);
    expect(timed.stderr).toContain("Repl job is stopped after 3600 s without activity");

    const awake = await h.devex(["update", "job", "--idle-timeout", "never"]);
    expect(awake.stderr).toContain("Repl job is kept awake: it is never stopped for being idle");

    const reset = await h.devex(["update", "job", "--idle-timeout", "default", "--json"]);
    expect(JSON.parse(reset.stdout)).toMatchObject({ keepAwake: false, idleTimeoutMs: 300_000 });
  });

  it("refuses bad values, and a read-only key", async () => {
    await h.devex(["create", "guarded", "--template", "blank"]);
    for (const args of [
      ["update", "guarded"],
      ["update", "guarded", "--idle-timeout", "soon"],
    ]) {
      const result = await h.devex(args);
      expect(result.status, args.join(" ")).toBe(2);
      expect(result.stderr).toMatch(/^devex: /);
    }
    // Out of bounds: core's validation names the field.
    const short = await h.devex(["update", "guarded", "--idle-timeout", "5"]);
    expect(short.status).toBe(1);
    expect(short.stderr).toMatch(/^devex: .*idle_timeout_ms: must be 0 \(the server default\) or between 60000/);

    const readOnly = await h.core
      .client(AuthService, h.apiKey)
      .createApiKey({ name: "read-only", scope: Scope.READ_ONLY });
    const refused = await h.devex(["update", "guarded", "--idle-timeout", "never"], {
      env: { DEVEX_API_KEY: readOnly.secret },
    });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/^devex: permission denied/);
    expect(JSON.parse((await h.devex(["ls", "--json"])).stdout)).toContainEqual(
      expect.objectContaining({ name: "guarded", keepAwake: false }),
    );
  });
});
