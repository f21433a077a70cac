import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService, Scope } from "@devex/gen/devex/core/v1/auth_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Devex, NotFoundError, PermissionDeniedError, type Repl } from "../src/index.js";
import { type LiveCore, startLiveCore, uniqueName } from "./support/live.js";

const idleTimeoutMs = 1_500;
let live: LiveCore;
let devex: Devex;

beforeAll(async () => {
  live = await startLiveCore(["--idle-timeout-ms", String(idleTimeoutMs), "--idle-check-interval-ms", "200"]);
  devex = new Devex({ baseUrl: live.core.url, apiKey: live.apiKey });
});
afterAll(async () => {
  await live?.close();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A full-scope API key of another user, made through the dev login. */
async function otherUsersKey(username: string): Promise<string> {
  let cookie = "";
  const login = createClient(
    AuthService,
    createGrpcTransport({
      baseUrl: live.core.url,
      interceptors: [
        (next) => async (req) => {
          const res = await next(req);
          cookie = (res.header.get("set-cookie") ?? "").split(";")[0] ?? "";
          return res;
        },
      ],
    }),
  );
  await login.devLogin({ username });
  const auth = createClient(
    AuthService,
    createGrpcTransport({
      baseUrl: live.core.url,
      interceptors: [
        (next) => (req) => {
          req.header.set("cookie", cookie);
          return next(req);
        },
      ],
    }),
  );
  return (await auth.createApiKey({ name: "other", scope: Scope.FULL })).secret;
}

describe("keeping a repl awake", () => {
  it("keeps a repl with no activity running past its idle timeout until keepAwake is cleared", async () => {
    const created = await devex.repls.create({ name: uniqueName("awake"), template: "blank" });
    expect(created.keepAwake).toBe(false);
    const kept = await created.update({ keepAwake: true });
    expect(kept.keepAwake).toBe(true);
    await kept.start();

    await sleep(3 * idleTimeoutMs);
    expect((await kept.refresh()).state).toBe("running");

    const cleared = await kept.update({ keepAwake: false });
    expect(cleared.keepAwake).toBe(false);
    let repl: Repl = cleared;
    const deadline = Date.now() + 20_000;
    while (repl.state !== "stopped" && Date.now() < deadline) {
      await sleep(200);
      repl = await repl.refresh();
    }
    expect(repl.state).toBe("stopped");
    await devex.repls.delete(repl.id);
  });

  it("is refused with a read-only key, and another user does not see the repl", async () => {
    const repl = await devex.repls.create({ name: uniqueName("owned"), template: "blank", keepAwake: true });
    expect(repl.keepAwake).toBe(true);
    const auth = live.core.client(AuthService, live.apiKey);
    const readOnly = await auth.createApiKey({ name: "read-only", scope: Scope.READ_ONLY });
    const reader = new Devex({ baseUrl: live.core.url, apiKey: readOnly.secret });
    await expect((await reader.repls.get(repl.id)).update({ keepAwake: false })).rejects.toBeInstanceOf(
      PermissionDeniedError,
    );

    const other = new Devex({ baseUrl: live.core.url, apiKey: await otherUsersKey("mallory") });
    await expect(other.repls.get(repl.id)).rejects.toBeInstanceOf(NotFoundError);
    expect((await repl.refresh()).keepAwake).toBe(true);
    await devex.repls.delete(repl.id);
  });
});
