import { Code } from "@connectrpc/connect";
import { ReplState } from "@devex/gen/devex/core/v1/repl_pb.js";
import { runnerTokenIssuer } from "@devex/kit";
import { decodeJwt } from "jose";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { UserRecord } from "../src/model.js";
import {
  codeOf,
  createClock,
  createReplHarness,
  type FakeClock,
  harnessIdleTimeoutMs,
  type ReplHarness,
} from "./support/repls-harness.js";

let h: ReplHarness;
let clock: FakeClock;
let alice: UserRecord;
let bob: UserRecord;

beforeEach(async () => {
  clock = createClock();
  h = await createReplHarness({ clock, replQuota: 5 });
  alice = await h.addUser("alice");
  bob = await h.addUser("bob");
});
afterEach(async () => {
  await h.close();
});

describe("CreateRepl", () => {
  it("creates a repl in CREATED at version 1 with its workspace seeded", async () => {
    const { repl } = await h.repls(alice).createRepl({
      name: "my-app",
      templateName: "node",
      labels: { team: "web" },
    });
    expect(repl?.id).toMatch(/^repl_[0-9a-z]{26}$/);
    expect(repl).toMatchObject({
      name: "my-app",
      ownerUserId: alice.id,
      templateName: "node",
      state: ReplState.CREATED,
      version: 1n,
      idleTimeoutMs: harnessIdleTimeoutMs,
      labels: { team: "web" },
    });
    // Its first snapshot is a copy of the template's archive, and current.
    const snapshots = await h.snapshots.list(repl?.id ?? "");
    expect(snapshots).toHaveLength(1);
    expect(snapshots[0]).toMatchObject({ reason: "template-seed", id: repl?.currentSnapshotId });
    const template = await h.catalog.get("node");
    expect(snapshots[0]?.sha256).toBe(template?.archive.sha256);
    expect(await h.objects.stat(snapshots[0]?.archiveKey ?? "")).toMatchObject({ bytes: template?.archive.bytes });
  });

  it("refuses an unknown template with NotFound naming it, and a prefix is no match", async () => {
    const error = await h
      .repls(alice)
      .createRepl({ name: "x", templateName: "nod" })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: Code.NotFound });
    expect(String(error)).toContain("template nod");
  });

  it("refuses a duplicate name for the same owner, allows it for another user", async () => {
    await h.repls(alice).createRepl({ name: "shared", templateName: "node" });
    expect(await codeOf(() => h.repls(alice).createRepl({ name: "shared", templateName: "python" }))).toBe(
      Code.AlreadyExists,
    );
    const { repl } = await h.repls(bob).createRepl({ name: "shared", templateName: "node" });
    expect(repl?.ownerUserId).toBe(bob.id);
  });

  it("allows exactly one of many concurrent creates with the same name", async () => {
    const codes = await Promise.all(
      Array.from({ length: 8 }, () => codeOf(() => h.repls(alice).createRepl({ name: "race", templateName: "node" }))),
    );
    expect(codes.filter((code) => code === "ok")).toHaveLength(1);
    expect(codes.filter((code) => code === Code.AlreadyExists)).toHaveLength(7);
    // The losers' seeded snapshots were removed again: one archive and one manifest are left.
    expect((await h.objects.list("repls/")).keys).toHaveLength(2);
  });

  it("enforces the per-user quota with ResourceExhausted, also under concurrent creates", async () => {
    const codes = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        codeOf(() => h.repls(alice).createRepl({ name: `r${i}`, templateName: "node" })),
      ),
    );
    expect(codes.filter((code) => code === "ok")).toHaveLength(5);
    expect(codes.filter((code) => code === Code.ResourceExhausted)).toHaveLength(3);
    // Another user has their own quota; deleting one frees a slot.
    expect(await codeOf(() => h.repls(bob).createRepl({ name: "r0", templateName: "node" }))).toBe("ok");
    const { repls } = await h.repls(alice).listRepls({});
    await h.repls(alice).deleteRepl({ replId: repls[0]?.id ?? "" });
    expect(await codeOf(() => h.repls(alice).createRepl({ name: "again", templateName: "node" }))).toBe("ok");
  });

  it("leaves no record behind when seeding fails", async () => {
    h.snapshots.failSeed = true;
    expect(await codeOf(() => h.repls(alice).createRepl({ name: "seedless", templateName: "node" }))).toBe(
      Code.Internal,
    );
    expect(await codeOf(() => h.repls(alice).getRepl({ repl: { case: "name", value: "seedless" } }))).toBe(
      Code.NotFound,
    );
    expect((await h.repls(alice).listRepls({})).repls).toHaveLength(0);
    expect((await h.objects.list("repls/")).keys).toEqual([]);
    h.snapshots.failSeed = false;
    expect(await codeOf(() => h.repls(alice).createRepl({ name: "seedless", templateName: "node" }))).toBe("ok");
  });

  it("refuses a read-only credential with PermissionDenied and no credential with Unauthenticated", async () => {
    expect(await codeOf(() => h.repls(alice, "read_only").createRepl({ name: "ro", templateName: "node" }))).toBe(
      Code.PermissionDenied,
    );
    expect(await codeOf(() => h.repls(alice, "read_only").listRepls({}))).toBe("ok");
    expect(await codeOf(() => h.repls(undefined).listRepls({}))).toBe(Code.Unauthenticated);
  });
});

describe("GetRepl and ListRepls", () => {
  it("gets by id and by name; another user's repl is NotFound either way", async () => {
    const { repl } = await h.repls(alice).createRepl({ name: "mine", templateName: "node" });
    const id = repl?.id ?? "";
    expect((await h.repls(alice).getRepl({ repl: { case: "replId", value: id } })).repl?.name).toBe("mine");
    expect((await h.repls(alice).getRepl({ repl: { case: "name", value: "mine" } })).repl?.id).toBe(id);
    expect(await codeOf(() => h.repls(bob).getRepl({ repl: { case: "replId", value: id } }))).toBe(Code.NotFound);
    expect(await codeOf(() => h.repls(bob).getRepl({ repl: { case: "name", value: "mine" } }))).toBe(Code.NotFound);
    for (const call of [
      () => h.repls(bob).startRepl({ replId: id }),
      () => h.repls(bob).stopRepl({ replId: id }),
      () => h.repls(bob).renameRepl({ replId: id, name: "theirs" }),
      () => h.repls(bob).deleteRepl({ replId: id }),
      () => h.repls(bob).getReplAccess({ replId: id }),
    ]) {
      expect(await codeOf(call)).toBe(Code.NotFound);
    }
    expect((await h.repls(alice).getRepl({ repl: { case: "replId", value: id } })).repl?.state).toBe(ReplState.CREATED);
  });

  it("lists only the caller's repls, newest first, over opaque pages", async () => {
    const names: string[] = [];
    for (let i = 0; i < 5; i++) {
      clock.advance(1000);
      names.push(`app-${i}`);
      await h.repls(alice).createRepl({ name: `app-${i}`, templateName: "node" });
    }
    await h.repls(bob).createRepl({ name: "bobs", templateName: "node" });
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await h.repls(alice).listRepls({ pageSize: 2, pageToken });
      seen.push(...page.repls.map((repl) => repl.name));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "");
    expect(seen).toEqual([...names].reverse());
    expect(pages).toBe(3);
  });

  it("filters by state and labels, and pages through the filtered set", async () => {
    const client = h.repls(alice);
    for (let i = 0; i < 5; i++) {
      clock.advance(10);
      await client.createRepl({ name: `r${i}`, templateName: "node", labels: { tier: i % 2 ? "odd" : "even" } });
    }
    const r1 = (await client.getRepl({ repl: { case: "name", value: "r1" } })).repl;
    await client.startRepl({ replId: r1?.id ?? "" });

    const running = await client.listRepls({ states: [ReplState.RUNNING] });
    expect(running.repls.map((repl) => repl.name)).toEqual(["r1"]);
    const even = await client.listRepls({ labels: { tier: "even" }, pageSize: 2 });
    expect(even.repls.map((repl) => repl.name)).toEqual(["r4", "r2"]);
    const rest = await client.listRepls({ labels: { tier: "even" }, pageSize: 2, pageToken: even.nextPageToken });
    expect(rest.repls.map((repl) => repl.name)).toEqual(["r0"]);
    expect(rest.nextPageToken).toBe("");
    const createdOdd = await client.listRepls({ states: [ReplState.CREATED], labels: { tier: "odd" } });
    expect(createdOdd.repls.map((repl) => repl.name)).toEqual(["r3"]);
  });

  it("refuses a garbage page token and a token reused with other filters", async () => {
    const client = h.repls(alice);
    for (let i = 0; i < 3; i++) await client.createRepl({ name: `p${i}`, templateName: "node" });
    const first = await client.listRepls({ pageSize: 1 });
    expect(first.nextPageToken).not.toBe("");
    expect(await codeOf(() => client.listRepls({ pageToken: "garbage" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(() => client.listRepls({ pageToken: first.nextPageToken, states: [ReplState.RUNNING] }))).toBe(
      Code.InvalidArgument,
    );
  });
});

describe("RenameRepl and UpdateRepl", () => {
  it("renames, frees the old name, refuses a taken name, and a same-name rename changes nothing", async () => {
    const client = h.repls(alice);
    const a = (await client.createRepl({ name: "a", templateName: "node" })).repl;
    await client.createRepl({ name: "b", templateName: "node" });
    const renamed = (await client.renameRepl({ replId: a?.id ?? "", name: "c" })).repl;
    expect(renamed).toMatchObject({ name: "c", version: 2n });
    expect(await codeOf(() => client.renameRepl({ replId: a?.id ?? "", name: "b" }))).toBe(Code.AlreadyExists);
    expect((await client.renameRepl({ replId: a?.id ?? "", name: "c" })).repl?.version).toBe(2n);
    // The old name is free again, the new one resolves.
    expect(await codeOf(() => client.createRepl({ name: "a", templateName: "node" }))).toBe("ok");
    expect((await client.getRepl({ repl: { case: "name", value: "c" } })).repl?.id).toBe(a?.id);
  });

  it("fails an expected_version mismatch with FailedPrecondition naming the current version, changing nothing", async () => {
    const client = h.repls(alice);
    const repl = (await client.createRepl({ name: "v", templateName: "node" })).repl;
    const id = repl?.id ?? "";
    await client.updateRepl({ replId: id, setLabels: { a: "1" } });
    const error = await client.renameRepl({ replId: id, name: "w", expectedVersion: 1n }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: Code.FailedPrecondition });
    expect(String(error)).toContain("version 2");
    for (const call of [
      () => client.updateRepl({ replId: id, idleTimeoutMs: 60_000, expectedVersion: 1n }),
      () => client.startRepl({ replId: id, expectedVersion: 1n }),
      () => client.deleteRepl({ replId: id, expectedVersion: 1n }),
    ]) {
      expect(await codeOf(call)).toBe(Code.FailedPrecondition);
    }
    const after = (await client.getRepl({ repl: { case: "replId", value: id } })).repl;
    expect(after).toMatchObject({ name: "v", version: 2n, state: ReplState.CREATED });
    expect(h.orchestrator.count("start")).toBe(0);
    expect((await client.renameRepl({ replId: id, name: "w", expectedVersion: 2n })).repl?.version).toBe(3n);
  });

  it("updates the idle timeout and labels, unset fields unchanged, 0 back to the default", async () => {
    const client = h.repls(alice);
    const id =
      (await client.createRepl({ name: "u", templateName: "node", labels: { a: "1", b: "2" } })).repl?.id ?? "";
    const updated = await client.updateRepl({
      replId: id,
      idleTimeoutMs: 120_000,
      removeLabels: ["a"],
      setLabels: { c: "3" },
    });
    expect(updated.repl).toMatchObject({ idleTimeoutMs: 120_000, labels: { b: "2", c: "3" }, version: 2n });
    const labelsOnly = await client.updateRepl({ replId: id, setLabels: { b: "9" } });
    expect(labelsOnly.repl).toMatchObject({ idleTimeoutMs: 120_000, labels: { b: "9", c: "3" } });
    const reset = await client.updateRepl({ replId: id, idleTimeoutMs: 0 });
    expect(reset.repl?.idleTimeoutMs).toBe(harnessIdleTimeoutMs);
    const noop = await client.updateRepl({ replId: id });
    expect(noop.repl?.version).toBe(reset.repl?.version);
  });

  it("keeps a repl awake at create or by an update of its owner only, with a writing scope", async () => {
    const client = h.repls(alice);
    const created = (await client.createRepl({ name: "k", templateName: "node", keepAwake: true })).repl;
    expect(created).toMatchObject({ keepAwake: true, idleTimeoutMs: harnessIdleTimeoutMs });
    const id = created?.id ?? "";
    const cleared = await client.updateRepl({ replId: id, keepAwake: false });
    expect(cleared.repl).toMatchObject({ keepAwake: false, version: 2n });
    // Unset leaves it as it is; the same value changes nothing.
    expect((await client.updateRepl({ replId: id, idleTimeoutMs: 90_000 })).repl).toMatchObject({
      keepAwake: false,
      version: 3n,
    });
    expect((await client.updateRepl({ replId: id, keepAwake: false })).repl?.version).toBe(3n);
    const kept = await client.updateRepl({ replId: id, keepAwake: true });
    expect(kept.repl).toMatchObject({ keepAwake: true, idleTimeoutMs: 90_000, version: 4n });

    expect(await codeOf(() => h.repls(alice, "read_only").updateRepl({ replId: id, keepAwake: false }))).toBe(
      Code.PermissionDenied,
    );
    expect(await codeOf(() => h.repls(bob).updateRepl({ replId: id, keepAwake: false }))).toBe(Code.NotFound);
    expect((await client.getRepl({ repl: { case: "replId", value: id } })).repl).toMatchObject({
      keepAwake: true,
      version: 4n,
    });
  });
});

describe("StartRepl, StopRepl, GetReplAccess", () => {
  it("starts with access to the runner, is idempotent, and stops with a save", async () => {
    const client = h.repls(alice);
    const id = (await client.createRepl({ name: "s", templateName: "node" })).repl?.id ?? "";
    expect(await codeOf(() => client.getReplAccess({ replId: id }))).toBe(Code.FailedPrecondition);

    const started = await client.startRepl({ replId: id });
    expect(started.repl).toMatchObject({ state: ReplState.RUNNING, version: 3n });
    expect(started.repl?.lastStartedAt).toBeDefined();
    expect(started.access?.endpointUrl).toBe(`https://repls.devex.test/${id}/`);
    const claims = decodeJwt(started.access?.token ?? "");
    expect(claims).toMatchObject({ aud: id, sub: alice.id, iss: runnerTokenIssuer, role: "user" });
    expect((await h.repository.get(id))?.record.runnerEndpoint).toBe(h.orchestrator.runners.get(id)?.endpoint);

    const again = await client.startRepl({ replId: id });
    expect(again.repl?.version).toBe(3n);
    expect(h.orchestrator.count("start", id)).toBe(1);
    expect((await client.getReplAccess({ replId: id })).access?.token).toBeTruthy();

    const stopped = await client.stopRepl({ replId: id });
    expect(stopped.repl).toMatchObject({ state: ReplState.STOPPED, stopReason: 1 });
    expect(stopped.snapshot?.id).toMatch(/^snap_/);
    expect(stopped.repl?.currentSnapshotId).toBe(stopped.snapshot?.id);
    expect(h.save.calls).toEqual([{ replId: id, reason: "user" }]);
    expect(h.orchestrator.runners.has(id)).toBe(false);

    const stoppedAgain = await client.stopRepl({ replId: id });
    expect(stoppedAgain.repl?.version).toBe(stopped.repl?.version);
    expect(stoppedAgain.snapshot).toBeUndefined();
    expect(h.save.calls).toHaveLength(1);
    expect(await h.consistency(id)).toBeUndefined();
  });

  it("turns a start that never gets healthy into FAILED with a reason and no runner, then retries from FAILED", async () => {
    const client = h.repls(alice);
    const id = (await client.createRepl({ name: "f", templateName: "node" })).repl?.id ?? "";
    h.orchestrator.failReady = "runner not healthy after 1000 ms";
    expect(await codeOf(() => client.startRepl({ replId: id }))).toBe(Code.Unavailable);
    const failed = (await client.getRepl({ repl: { case: "replId", value: id } })).repl;
    expect(failed?.state).toBe(ReplState.FAILED);
    expect(failed?.failureReason).toContain("not healthy");
    expect(h.orchestrator.runners.has(id)).toBe(false);
    expect(await h.consistency(id)).toBeUndefined();

    h.orchestrator.failReady = undefined;
    const retried = await client.startRepl({ replId: id });
    expect(retried.repl).toMatchObject({ state: ReplState.RUNNING, failureReason: "" });
  });

  it("keeps the repl RUNNING with its runner when the save fails, and stops once saving works", async () => {
    const client = h.repls(alice);
    const id = (await client.createRepl({ name: "keep", templateName: "node" })).repl?.id ?? "";
    await client.startRepl({ replId: id });
    h.save.fail = "object storage unreachable";
    const error = await client.stopRepl({ replId: id }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: Code.Unavailable });
    expect(String(error)).toContain("still running");
    expect((await client.getRepl({ repl: { case: "replId", value: id } })).repl?.state).toBe(ReplState.RUNNING);
    expect(h.orchestrator.runners.get(id)?.phase).toBe("ready");
    expect(h.orchestrator.count("stop", id)).toBe(0);

    h.save.fail = undefined;
    expect((await client.stopRepl({ replId: id })).repl?.state).toBe(ReplState.STOPPED);
    expect(h.orchestrator.runners.has(id)).toBe(false);
  });
});

describe("DeleteRepl", () => {
  it("stops a running repl without saving, removes workspace and every key, frees the name", async () => {
    const client = h.repls(alice);
    const id = (await client.createRepl({ name: "gone", templateName: "node" })).repl?.id ?? "";
    await client.startRepl({ replId: id });
    await client.deleteRepl({ replId: id });
    expect(h.orchestrator.runners.has(id)).toBe(false);
    expect(h.orchestrator.workspaces.has(id)).toBe(false);
    expect((await h.objects.list(`repls/${id}/`)).keys).toEqual([]);
    expect(await h.store.get(`repl-snapshots:${id}`)).toBeUndefined();
    expect(h.save.calls).toHaveLength(0);
    expect(h.orchestrator.violations).toEqual([]);
    for (const key of [`repl:${id}`, `repl-name:${alice.id}:gone`, `repl-activity:${id}`]) {
      expect(await h.store.get(key)).toBeUndefined();
    }
    expect(await h.store.count(`user-repls:${alice.id}`)).toBe(0);
    expect(await h.store.count("repls")).toBe(0);
    expect(await codeOf(() => client.createRepl({ name: "gone", templateName: "node" }))).toBe("ok");
  });

  it("is NotFound the second time unless allow_missing, and concurrent deletes all succeed", async () => {
    const client = h.repls(alice);
    const id = (await client.createRepl({ name: "twice", templateName: "node" })).repl?.id ?? "";
    const codes = await Promise.all(Array.from({ length: 4 }, () => codeOf(() => client.deleteRepl({ replId: id }))));
    expect(codes).toEqual(["ok", "ok", "ok", "ok"]);
    expect(await codeOf(() => client.deleteRepl({ replId: id }))).toBe(Code.NotFound);
    expect(await codeOf(() => client.deleteRepl({ replId: id, allowMissing: true }))).toBe("ok");
    expect(h.orchestrator.count("removeWorkspace", id)).toBeGreaterThanOrEqual(1);
  });

  it("resumes an interrupted deletion when called again", async () => {
    const client = h.repls(alice);
    const id = (await client.createRepl({ name: "stuck", templateName: "node" })).repl?.id ?? "";
    await client.startRepl({ replId: id });
    h.orchestrator.failStop = "kubernetes api down";
    expect(await codeOf(() => client.deleteRepl({ replId: id }))).toBe(Code.Unavailable);
    const deleting = (await client.getRepl({ repl: { case: "replId", value: id } })).repl;
    expect(deleting?.state).toBe(ReplState.DELETING);
    expect(await codeOf(() => client.startRepl({ replId: id }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(() => client.renameRepl({ replId: id, name: "other" }))).toBe(Code.FailedPrecondition);
    h.orchestrator.failStop = undefined;
    await client.deleteRepl({ replId: id });
    expect(await h.repository.get(id)).toBeUndefined();
    expect(await h.consistency(id)).toBeUndefined();
  });
});
