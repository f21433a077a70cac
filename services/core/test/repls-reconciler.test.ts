import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newId } from "../src/ids.js";
import type { UserRecord } from "../src/model.js";
import { createReconciler, type Reconciler } from "../src/repls/reconciler.js";
import { createClock, createReplHarness, type FakeClock, type ReplHarness } from "./support/repls-harness.js";

const stuckAfterMs = 2_000;
let h: ReplHarness;
let clock: FakeClock;
let alice: UserRecord;
let reconciler: Reconciler;

beforeEach(async () => {
  clock = createClock();
  h = await createReplHarness({ clock });
  alice = await h.addUser("alice");
  reconciler = createReconciler({
    lifecycle: h.lifecycle,
    orchestrator: h.orchestrator,
    stuckAfterMs,
    now: clock.now,
  });
});
afterEach(async () => {
  await reconciler.stop();
  await h.close();
});

const createRepl = async (name: string) =>
  (await h.repls(alice).createRepl({ name, templateName: "node" })).repl?.id ?? "";

/** Leaves a repl as a core that crashed mid-transition would: in `state`, owned by a worker that is gone. */
const abandonIn = async (replId: string, state: "starting" | "stopping" | "deleting") => {
  await h.repository.update(replId, ({ record }) => ({
    ...record,
    state,
    ...(state === "stopping" ? { stopReason: "user" as const } : {}),
    transitionId: "crashed-worker",
    transitionAtMs: clock.now(),
  }));
};

describe("the reconciler", () => {
  it("stops runners no repl explains and keeps those that are explained", async () => {
    const running = await createRepl("running");
    await h.repls(alice).startRepl({ replId: running });
    const stopped = await createRepl("stopped");
    h.orchestrator.plantRunner(stopped);
    const unknown = newId("repl");
    h.orchestrator.plantRunner(unknown);

    const report = await reconciler.runOnce();
    expect(report.orphansStopped.sort()).toEqual([stopped, unknown].sort());
    expect([...h.orchestrator.runners.keys()]).toEqual([running]);
    expect((await h.repository.get(running))?.record.state).toBe("running");
    expect(report.errors).toEqual([]);
  });

  it("fails a running repl whose runner is gone, with reason runner lost", async () => {
    const id = await createRepl("lost");
    await h.repls(alice).startRepl({ replId: id });
    h.orchestrator.crash(id);

    const report = await reconciler.runOnce();
    expect(report.lostRunners).toEqual([id]);
    const repl = (await h.repository.get(id))?.record;
    expect(repl?.state).toBe("failed");
    expect(repl?.failureReason).toMatch(/^runner lost/);
    expect(repl?.runnerEndpoint).toBeUndefined();
    expect(await h.consistency(id)).toBeUndefined();
    // StartRepl recovers it.
    expect((await h.repls(alice).startRepl({ replId: id })).repl?.failureReason).toBe("");
  });

  it("finishes a stuck stop: saves while the runner is there, tears it down, ends stopped", async () => {
    const id = await createRepl("stuck-stop");
    await h.repls(alice).startRepl({ replId: id });
    await abandonIn(id, "stopping");

    expect((await reconciler.runOnce()).stuckRetried).toEqual([]);
    expect((await h.repository.get(id))?.record.state).toBe("stopping");

    clock.advance(stuckAfterMs + 1);
    const report = await reconciler.runOnce();
    expect(report.stuckRetried).toEqual([id]);
    const repl = (await h.repository.get(id))?.record;
    expect(repl?.state).toBe("stopped");
    expect(repl?.currentSnapshotId).toMatch(/^snap_/);
    expect(h.save.calls).toEqual([{ replId: id, reason: "user" }]);
    expect(h.orchestrator.runners.has(id)).toBe(false);
    expect(await h.consistency(id)).toBeUndefined();
  });

  it("fails a stuck start and removes its runner", async () => {
    const id = await createRepl("stuck-start");
    await abandonIn(id, "starting");
    h.orchestrator.plantRunner(id);
    clock.advance(stuckAfterMs + 1);

    const report = await reconciler.runOnce();
    expect(report.stuckRetried).toEqual([id]);
    const repl = (await h.repository.get(id))?.record;
    expect(repl?.state).toBe("failed");
    expect(repl?.failureReason).toContain("did not complete");
    expect(h.orchestrator.runners.has(id)).toBe(false);
  });

  it("finishes a stuck deletion", async () => {
    const id = await createRepl("stuck-delete");
    await h.repls(alice).startRepl({ replId: id });
    await abandonIn(id, "deleting");
    clock.advance(stuckAfterMs + 1);

    await reconciler.runOnce();
    expect(await h.repository.get(id)).toBeUndefined();
    expect(h.orchestrator.runners.has(id)).toBe(false);
    expect(h.orchestrator.workspaces.has(id)).toBe(false);
    expect(h.orchestrator.violations).toEqual([]);
  });

  it("runs a pass at start-up and then on its interval", async () => {
    const id = newId("repl");
    h.orchestrator.plantRunner(id);
    reconciler.start(20);
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(h.orchestrator.runners.has(id)).toBe(false);
    const later = newId("repl");
    h.orchestrator.plantRunner(later);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(h.orchestrator.runners.has(later)).toBe(false);
    await reconciler.stop();
  });
});
