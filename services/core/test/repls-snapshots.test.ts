import { randomUUID } from "node:crypto";
import { readdir, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { ReplState, SnapshotReason } from "@devex/gen/devex/core/v1/repl_pb.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { UserRecord } from "../src/model.js";
import { codeOf, createReplHarness, type ReplHarness } from "./support/repls-harness.js";

/**
 * The snapshot RPCs over the repls harness: real snapshot bookkeeping (state store lists, a
 * filesystem workspace store holding archives and manifests), with the runner's export and
 * import played by the harness's fake runner calls.
 */
let h: ReplHarness;
let alice: UserRecord;
let bob: UserRecord;

beforeEach(async () => {
  h = await createReplHarness();
  alice = await h.addUser("alice");
  bob = await h.addUser("bob");
});
afterEach(async () => {
  await h.close();
});

const createRepl = async (name: string) =>
  (await h.repls(alice).createRepl({ name, templateName: "node" })).repl?.id ?? "";

describe("ListSnapshots", () => {
  it("lists the template seed of a new repl as current, with the template's checksum and sizes", async () => {
    const id = await createRepl("fresh");
    const { snapshots, nextPageToken } = await h.repls(alice).listSnapshots({ replId: id });
    const template = await h.catalog.get("node");
    expect(nextPageToken).toBe("");
    expect(snapshots).toHaveLength(1);
    expect(snapshots[0]).toMatchObject({
      replId: id,
      reason: SnapshotReason.TEMPLATE_SEED,
      current: true,
      sha256: template?.archive.sha256,
      sizeBytes: BigInt(template?.archive.bytes ?? -1),
      runnerVersion: "",
    });
  });

  it("is NotFound for another user's repl and answers read-only credentials", async () => {
    const id = await createRepl("mine");
    expect(await codeOf(() => h.repls(bob).listSnapshots({ replId: id }))).toBe(Code.NotFound);
    expect(await codeOf(() => h.repls(alice, "read_only").listSnapshots({ replId: id }))).toBe("ok");
  });

  it("pages newest first", async () => {
    const id = await createRepl("paged");
    const client = h.repls(alice);
    await client.startRepl({ replId: id });
    for (let i = 0; i < 4; i++) await client.createSnapshot({ replId: id, description: `save ${i}` });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await client.listSnapshots({ replId: id, pageSize: 2, pageToken });
      expect(page.snapshots.length).toBeLessThanOrEqual(2);
      seen.push(...page.snapshots.map((snapshot) => snapshot.description || snapshot.reason.toString()));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual(["save 3", "save 2", "save 1", "save 0", String(SnapshotReason.TEMPLATE_SEED)]);
    expect(await codeOf(() => client.listSnapshots({ replId: id, pageToken: "garbage" }))).toBe(Code.InvalidArgument);
  });
});

describe("CreateSnapshot", () => {
  it("saves a running repl as the new current snapshot, and refuses a repl that is not running", async () => {
    const id = await createRepl("manual");
    const client = h.repls(alice);
    expect(await codeOf(() => client.createSnapshot({ replId: id }))).toBe(Code.FailedPrecondition);
    await client.startRepl({ replId: id });
    const { snapshot, repl } = await client.createSnapshot({ replId: id, description: "before upgrading deps" });
    expect(snapshot).toMatchObject({
      reason: SnapshotReason.MANUAL,
      current: true,
      description: "before upgrading deps",
      runnerVersion: "0.0.0-harness",
    });
    expect(repl).toMatchObject({ state: ReplState.RUNNING, currentSnapshotId: snapshot?.id });
    // Archive and manifest are both stored.
    const keys = (await h.objects.list(`repls/${id}/snapshots/`)).keys.map((object) => object.key);
    expect(keys).toContain(`repls/${id}/snapshots/${snapshot?.id}.tar.zst`);
    expect(keys).toContain(`repls/${id}/snapshots/${snapshot?.id}.json`);
    expect(await codeOf(() => h.repls(alice, "read_only").createSnapshot({ replId: id }))).toBe(Code.PermissionDenied);
    expect(await codeOf(() => h.repls(bob).createSnapshot({ replId: id }))).toBe(Code.NotFound);
  });

  it("serializes racing saves: every one is listed, and the last made is current", async () => {
    const id = await createRepl("racing");
    const client = h.repls(alice);
    await client.startRepl({ replId: id });
    const results = await Promise.all(
      Array.from({ length: 5 }, (_, i) => client.createSnapshot({ replId: id, description: `race ${i}` })),
    );
    const ids = results.map((result) => result.snapshot?.id ?? "");
    const listed = (await client.listSnapshots({ replId: id })).snapshots;
    expect(listed.map((snapshot) => snapshot.id).slice(0, 5)).toEqual([...ids].sort().reverse());
    const current = (await client.getRepl({ repl: { case: "replId", value: id } })).repl?.currentSnapshotId;
    expect(current).toBe([...ids].sort().at(-1));
    expect(listed.filter((snapshot) => snapshot.current)).toHaveLength(1);
  });

  it("keeps the newest ten and the current one, deleting the objects of the rest", async () => {
    const id = await createRepl("pruned");
    const client = h.repls(alice);
    await client.startRepl({ replId: id });
    for (let i = 0; i < 12; i++) await client.createSnapshot({ replId: id });
    const listed = (await client.listSnapshots({ replId: id })).snapshots;
    expect(listed).toHaveLength(10);
    expect(listed[0]?.current).toBe(true);
    const archives = (await h.objects.list(`repls/${id}/snapshots/`)).keys.filter((object) =>
      object.key.endsWith(".tar.zst"),
    );
    expect(archives.map((object) => object.key).sort()).toEqual(
      listed.map((snapshot) => `repls/${id}/snapshots/${snapshot.id}.tar.zst`).sort(),
    );
  });
});

describe("RestoreSnapshot", () => {
  it("records a restore of an older snapshot as current, which the next start restores", async () => {
    const id = await createRepl("undo");
    const client = h.repls(alice);
    const seed = (await client.listSnapshots({ replId: id })).snapshots[0];
    await client.startRepl({ replId: id });
    expect(await codeOf(() => client.restoreSnapshot({ replId: id, snapshotId: seed?.id ?? "" }))).toBe(
      Code.FailedPrecondition,
    );
    const stopped = await client.stopRepl({ replId: id });
    expect(stopped.snapshot).toMatchObject({ reason: SnapshotReason.STOP, current: true });

    const { repl, snapshot } = await client.restoreSnapshot({ replId: id, snapshotId: seed?.id ?? "" });
    expect(snapshot).toMatchObject({
      reason: SnapshotReason.RESTORE,
      restoredFromSnapshotId: seed?.id,
      sha256: seed?.sha256,
      current: true,
    });
    expect(repl?.currentSnapshotId).toBe(snapshot?.id);
    // The stop's snapshot stays in the history, so the restore can be undone.
    const listed = (await client.listSnapshots({ replId: id })).snapshots.map((s) => s.id);
    expect(listed).toEqual([snapshot?.id, stopped.snapshot?.id, seed?.id]);
    expect((await client.startRepl({ replId: id })).repl?.state).toBe(ReplState.RUNNING);
  });

  it("is NotFound for a snapshot of another repl, FailedPrecondition on a version mismatch", async () => {
    const one = await createRepl("one");
    const two = await createRepl("two");
    const client = h.repls(alice);
    const otherSeed = (await client.listSnapshots({ replId: two })).snapshots[0]?.id ?? "";
    expect(await codeOf(() => client.restoreSnapshot({ replId: one, snapshotId: otherSeed }))).toBe(Code.NotFound);
    const ownSeed = (await client.listSnapshots({ replId: one })).snapshots[0]?.id ?? "";
    expect(await codeOf(() => client.restoreSnapshot({ replId: one, snapshotId: ownSeed, expectedVersion: 9n }))).toBe(
      Code.FailedPrecondition,
    );
    expect((await client.listSnapshots({ replId: one })).snapshots).toHaveLength(1);
  });

  it("refuses a damaged archive with DataLoss and changes nothing", async () => {
    const id = await createRepl("damaged");
    const client = h.repls(alice);
    await client.startRepl({ replId: id });
    const manual = (await client.createSnapshot({ replId: id })).snapshot;
    await client.stopRepl({ replId: id });
    await h.objects.put(`repls/${id}/snapshots/${manual?.id}.tar.zst`, Buffer.from("flipped bits"));
    const before = await client.getRepl({ repl: { case: "replId", value: id } });
    const listedBefore = (await client.listSnapshots({ replId: id })).snapshots;

    const error = await client.restoreSnapshot({ replId: id, snapshotId: manual?.id ?? "" }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: Code.DataLoss });
    expect(String(error)).toContain("damaged");
    expect((await client.getRepl({ repl: { case: "replId", value: id } })).repl?.version).toBe(before.repl?.version);
    expect((await client.listSnapshots({ replId: id })).snapshots).toEqual(listedBefore);
  });

  it("fails a start whose current snapshot is damaged with DataLoss, saying which, and recovers by a restore", async () => {
    const id = await createRepl("broken-start");
    const client = h.repls(alice);
    const seed = (await client.listSnapshots({ replId: id })).snapshots[0];
    await client.startRepl({ replId: id });
    const stopped = await client.stopRepl({ replId: id });
    await h.objects.put(`repls/${id}/snapshots/${stopped.snapshot?.id}.tar.zst`, Buffer.from("truncated"));

    const error = await client.startRepl({ replId: id }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: Code.DataLoss });
    const failed = (await client.getRepl({ repl: { case: "replId", value: id } })).repl;
    expect(failed?.state).toBe(ReplState.FAILED);
    expect(failed?.failureReason).toContain(stopped.snapshot?.id ?? "?");
    expect(h.orchestrator.runners.has(id)).toBe(false);

    await client.restoreSnapshot({ replId: id, snapshotId: seed?.id ?? "" });
    expect((await client.startRepl({ replId: id })).repl?.state).toBe(ReplState.RUNNING);
  });
});

describe("what a crash in the middle of a save leaves", () => {
  /** The upload a save killed by a crash leaves in the filesystem store: a 5 MB temporary file beside the archives. */
  const leaveCrashedUpload = async (replId: string, ageMs: number) => {
    const path = join(h.objectsDir, "repls", replId, "snapshots", `.devex-tmp-${randomUUID()}`);
    await writeFile(path, Buffer.alloc(5 * 1024 * 1024, 1));
    const lastWrite = new Date(Date.now() - ageMs);
    await utimes(path, lastWrite, lastWrite);
    return path;
  };

  it("is removed by DeleteRepl, which leaves no empty folders", async () => {
    const id = await createRepl("crashed");
    const client = h.repls(alice);
    await client.startRepl({ replId: id });
    await client.createSnapshot({ replId: id });
    await leaveCrashedUpload(id, 0);
    await client.deleteRepl({ replId: id });
    await expect(stat(join(h.objectsDir, "repls", id))).rejects.toMatchObject({ code: "ENOENT" });
    expect(await readdir(join(h.objectsDir, "repls")).catch(() => [])).toEqual([]);
  });

  it("is removed by pruning once older than the orphan age; an upload as fresh as a save in progress stays", async () => {
    const id = await createRepl("crashed-pruned");
    const client = h.repls(alice);
    await client.startRepl({ replId: id });
    const stale = await leaveCrashedUpload(id, 2 * 3_600_000);
    const fresh = await leaveCrashedUpload(id, 0);
    // Every save prunes.
    await client.createSnapshot({ replId: id });
    await expect(stat(stale)).rejects.toMatchObject({ code: "ENOENT" });
    expect((await stat(fresh)).size).toBe(5 * 1024 * 1024);
  });
});
