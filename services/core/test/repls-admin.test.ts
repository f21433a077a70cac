import { Code } from "@connectrpc/connect";
import { ReplState, ReplStopReason } from "@devex/gen/devex/core/v1/repl_pb.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newId } from "../src/ids.js";
import type { UserRecord } from "../src/model.js";
import { codeOf, createClock, createReplHarness, type FakeClock, type ReplHarness } from "./support/repls-harness.js";

let h: ReplHarness;
let clock: FakeClock;
let alice: UserRecord;
let bob: UserRecord;
let root: UserRecord;

beforeEach(async () => {
  clock = createClock();
  h = await createReplHarness({ clock });
  alice = await h.addUser("alice");
  clock.advance(1_000);
  bob = await h.addUser("bob");
  clock.advance(1_000);
  root = await h.addUser("root", { admin: true });
});
afterEach(async () => {
  await h.close();
});

const createRepl = async (user: UserRecord, name: string, templateName = "node") => {
  clock.advance(10);
  return (await h.repls(user).createRepl({ name, templateName })).repl?.id ?? "";
};

describe("AdminService access", () => {
  it("refuses non-admins and an admin's FULL-scoped credential", async () => {
    expect(await codeOf(() => h.admin(alice).listAllRepls({}))).toBe(Code.PermissionDenied);
    expect(await codeOf(() => h.admin(root, "full").getUsage({}))).toBe(Code.PermissionDenied);
    expect(await codeOf(() => h.admin(root).listUsers({}))).toBe("ok");
  });
});

describe("ListAllRepls", () => {
  it("lists every user's repls newest first, filtered by owner, state and template, over pages", async () => {
    const a1 = await createRepl(alice, "a1");
    const b1 = await createRepl(bob, "b1", "python");
    const a2 = await createRepl(alice, "a2", "python");
    await h.repls(alice).startRepl({ replId: a2 });

    const all = await h.admin(root).listAllRepls({});
    expect(all.repls.map((repl) => repl.id)).toEqual([a2, b1, a1]);
    const page1 = await h.admin(root).listAllRepls({ pageSize: 2 });
    const page2 = await h.admin(root).listAllRepls({ pageSize: 2, pageToken: page1.nextPageToken });
    expect([...page1.repls, ...page2.repls].map((repl) => repl.id)).toEqual([a2, b1, a1]);
    expect(page2.nextPageToken).toBe("");

    expect((await h.admin(root).listAllRepls({ ownerUserId: alice.id })).repls.map((r) => r.id)).toEqual([a2, a1]);
    expect((await h.admin(root).listAllRepls({ states: [ReplState.RUNNING] })).repls.map((r) => r.id)).toEqual([a2]);
    expect((await h.admin(root).listAllRepls({ templateName: "python" })).repls.map((r) => r.id)).toEqual([a2, b1]);
    expect(
      (await h.admin(root).listAllRepls({ templateName: "python", ownerUserId: bob.id })).repls.map((r) => r.id),
    ).toEqual([b1]);
  });
});

describe("ForceStopRepl", () => {
  it("saves first by default (reason admin) and ends STOPPED with stop_reason ADMIN", async () => {
    const id = await createRepl(alice, "forced");
    await h.repls(alice).startRepl({ replId: id });
    const { repl, snapshot } = await h.admin(root).forceStopRepl({ replId: id, reason: "abuse report" });
    expect(repl).toMatchObject({ state: ReplState.STOPPED, stopReason: ReplStopReason.ADMIN });
    expect(snapshot?.id).toMatch(/^snap_/);
    expect(h.save.calls).toEqual([{ replId: id, reason: "admin" }]);
    expect(h.orchestrator.runners.has(id)).toBe(false);
  });

  it("keeps the repl running when the save fails, unless skip_save, which stops without saving", async () => {
    const id = await createRepl(alice, "unsaveable");
    await h.repls(alice).startRepl({ replId: id });
    h.save.fail = "bucket gone";
    expect(await codeOf(() => h.admin(root).forceStopRepl({ replId: id }))).toBe(Code.Unavailable);
    expect((await h.repository.get(id))?.record.state).toBe("running");
    expect(h.orchestrator.runners.has(id)).toBe(true);

    const { repl, snapshot } = await h.admin(root).forceStopRepl({ replId: id, skipSave: true });
    expect(repl).toMatchObject({ state: ReplState.STOPPED, stopReason: ReplStopReason.ADMIN });
    expect(snapshot).toBeUndefined();
    expect(h.save.calls).toHaveLength(1);
    expect(h.orchestrator.runners.has(id)).toBe(false);
  });

  it("aborts a start in progress with skip_save", async () => {
    const id = await createRepl(alice, "starting");
    h.orchestrator.readyDelayMs = 200;
    const start = codeOf(() => h.repls(alice).startRepl({ replId: id }));
    await new Promise((resolve) => setTimeout(resolve, 10));
    const { repl } = await h.admin(root).forceStopRepl({ replId: id, skipSave: true });
    expect(repl?.state).toBe(ReplState.STOPPED);
    expect(await start).toBe(Code.Aborted);
    expect(await h.consistency(id)).toBeUndefined();
  });

  it("returns a created repl unchanged, removes a failed repl's leftover runner, and is NotFound for no repl", async () => {
    const created = await createRepl(alice, "idle");
    const { repl } = await h.admin(root).forceStopRepl({ replId: created, skipSave: true });
    expect(repl).toMatchObject({ state: ReplState.CREATED, version: 1n });

    const failed = await createRepl(alice, "broken");
    h.orchestrator.failReady = "crash loop";
    await codeOf(() => h.repls(alice).startRepl({ replId: failed }));
    h.orchestrator.failReady = undefined;
    h.orchestrator.plantRunner(failed);
    expect((await h.admin(root).forceStopRepl({ replId: failed, skipSave: true })).repl?.state).toBe(ReplState.FAILED);
    expect(h.orchestrator.runners.has(failed)).toBe(false);

    expect(await codeOf(() => h.admin(root).forceStopRepl({ replId: newId("repl") }))).toBe(Code.NotFound);
  });
});

describe("GetUsage", () => {
  it("reports totals by state, live runners, and per-user counts with runner time including deleted repls", async () => {
    const a1 = await createRepl(alice, "a1");
    const a2 = await createRepl(alice, "a2");
    await createRepl(bob, "b1");
    h.orchestrator.plantRunner(newId("repl"));

    await h.repls(alice).startRepl({ replId: a1 });
    clock.advance(10_000);
    await h.repls(alice).stopRepl({ replId: a1 });
    await h.repls(alice).startRepl({ replId: a2 });
    clock.advance(4_000);
    await h.repls(alice).deleteRepl({ replId: a2 });
    await h.repls(alice).startRepl({ replId: a1 });
    clock.advance(3_000);

    const usage = await h.admin(root).getUsage({});
    expect(usage.totals).toMatchObject({ userCount: 3, replCount: 2, runningRunnerCount: 2 });
    expect(usage.totals?.replsByState.map((entry) => [entry.state, entry.count])).toEqual([
      [ReplState.CREATED, 1],
      [ReplState.STARTING, 0],
      [ReplState.RUNNING, 1],
      [ReplState.STOPPING, 0],
      [ReplState.STOPPED, 0],
      [ReplState.FAILED, 0],
      [ReplState.DELETING, 0],
    ]);
    const byUser = new Map(usage.users.map((user) => [user.userId, user]));
    expect(byUser.get(alice.id)).toMatchObject({ replCount: 1, runningReplCount: 1, runnerTimeMs: 17_000n });
    expect(byUser.get(bob.id)).toMatchObject({ replCount: 1, runningReplCount: 0, runnerTimeMs: 0n });
    expect(byUser.get(root.id)).toMatchObject({ replCount: 0 });
    expect(usage.users.map((user) => user.userId)).toEqual([alice.id, bob.id, root.id]);
    expect(Number(usage.computedAt?.seconds) * 1000).toBe(Math.floor(clock.now() / 1000) * 1000);
  });

  it("pages the per-user entries by user id and filters one user", async () => {
    const first = await h.admin(root).getUsage({ pageSize: 2 });
    expect(first.users.map((user) => user.userId)).toEqual([alice.id, bob.id]);
    const second = await h.admin(root).getUsage({ pageSize: 2, pageToken: first.nextPageToken });
    expect(second.users.map((user) => user.userId)).toEqual([root.id]);
    expect(second.nextPageToken).toBe("");
    expect((await h.admin(root).getUsage({ userId: bob.id })).users.map((user) => user.userId)).toEqual([bob.id]);
  });
});

describe("ListUsers", () => {
  it("lists users newest first with identities and admin flag, over pages", async () => {
    const first = await h.admin(root).listUsers({ pageSize: 2 });
    expect(first.users.map((user) => user.displayName)).toEqual(["root", "bob"]);
    expect(first.users[0]?.admin).toBe(true);
    expect(first.users[0]?.identities[0]).toMatchObject({ providerId: "dev", subject: "root" });
    const second = await h.admin(root).listUsers({ pageSize: 2, pageToken: first.nextPageToken });
    expect(second.users.map((user) => user.displayName)).toEqual(["alice"]);
    expect(second.nextPageToken).toBe("");
  });
});
