import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { UserRecord } from "../src/model.js";
import type { RunnerInstance } from "../src/orchestrator/orchestrator.js";
import type { RunnerStatus } from "../src/orchestrator/runner-client.js";
import { createIdleMonitor, type IdleMonitor } from "../src/repls/idle.js";
import { createClock, createReplHarness, type FakeClock, type ReplHarness } from "./support/repls-harness.js";

const defaultIdleTimeoutMs = 300_000;
let h: ReplHarness;
let clock: FakeClock;
let alice: UserRecord;
let monitor: IdleMonitor;
/** What each repl's runner answers: a status, or an error to throw. */
let answers: Map<string, Partial<RunnerStatus> | Error>;
let asked: RunnerInstance[];

beforeEach(async () => {
  clock = createClock();
  h = await createReplHarness({ clock });
  alice = await h.addUser("alice");
  answers = new Map();
  asked = [];
  monitor = createIdleMonitor({
    lifecycle: h.lifecycle,
    orchestrator: h.orchestrator,
    defaultIdleTimeoutMs,
    now: clock.now,
    status: {
      async status(instance) {
        asked.push(instance);
        const answer = answers.get(instance.replId);
        if (answer instanceof Error) throw answer;
        return {
          replId: instance.replId,
          attachedClients: 0,
          sessionCount: 0,
          runningProcessCount: 0,
          busySessionCount: 0,
          lastActivityAtMs: 0,
          version: "test",
          ...answer,
        };
      },
    },
  });
});
afterEach(async () => {
  await monitor.stop();
  await h.close();
});

const startRepl = async (name: string, idleTimeoutMs = 0) => {
  const id = (await h.repls(alice).createRepl({ name, templateName: "node", idleTimeoutMs })).repl?.id ?? "";
  await h.repls(alice).startRepl({ replId: id });
  return id;
};

describe("the idle monitor", () => {
  it("stops a repl idle for longer than the default timeout, saving with reason idle", async () => {
    const id = await startRepl("sleepy");
    answers.set(id, { lastActivityAtMs: clock.now() });
    clock.advance(defaultIdleTimeoutMs - 1_000);
    expect((await monitor.checkOnce()).stopped).toEqual([]);
    expect((await h.repository.get(id))?.record.state).toBe("running");

    clock.advance(2_000);
    const report = await monitor.checkOnce();
    expect(report.stopped).toEqual([id]);
    const repl = (await h.repository.get(id))?.record;
    expect(repl?.state).toBe("stopped");
    expect(repl?.stopReason).toBe("idle");
    expect(h.save.calls).toEqual([{ replId: id, reason: "idle" }]);
    expect(h.orchestrator.runners.has(id)).toBe(false);
    expect(asked[0]?.replId).toBe(id);
  });

  it("uses the repl's own idle timeout", async () => {
    const id = await startRepl("quick", 60_000);
    const other = await startRepl("default");
    clock.advance(61_000);
    expect((await monitor.checkOnce()).stopped).toEqual([id]);
    expect((await h.repository.get(other))?.record.state).toBe("running");
  });

  it("keeps a repl with an attached client or a running process, recording activity without a new version", async () => {
    const attached = await startRepl("attached");
    const busy = await startRepl("busy");
    answers.set(attached, { attachedClients: 1 });
    answers.set(busy, { runningProcessCount: 2 });
    const versionBefore = (await h.repository.get(attached))?.version;
    clock.advance(defaultIdleTimeoutMs * 2);
    expect((await monitor.checkOnce()).stopped).toEqual([]);
    const repl = await h.repository.get(attached);
    expect(repl?.record.lastActiveAtMs).toBe(clock.now());
    expect(repl?.version).toBe(versionBefore);
    const shown = (await h.repls(alice).getRepl({ repl: { case: "replId", value: attached } })).repl;
    expect(Number(shown?.lastActiveAt?.seconds) * 1000).toBe(Math.floor(clock.now() / 1000) * 1000);
  });

  it("keeps a repl whose terminal runs a quiet command with no client attached, and stops it once the shell is back at its prompt", async () => {
    const id = await startRepl("quiet-build");
    // `sleep 600` in a detached terminal: no client, no output since it started, one busy session.
    const startedAt = clock.now();
    answers.set(id, { sessionCount: 1, busySessionCount: 1, lastActivityAtMs: startedAt });
    clock.advance(defaultIdleTimeoutMs + 4_500);
    expect((await monitor.checkOnce()).stopped).toEqual([]);
    expect((await h.repository.get(id))?.record.lastActiveAtMs).toBe(clock.now());

    // The sleep ended at this check (output then: its prompt); nothing since.
    answers.set(id, { sessionCount: 1, busySessionCount: 0, lastActivityAtMs: clock.now() });
    clock.advance(defaultIdleTimeoutMs - 1_000);
    expect((await monitor.checkOnce()).stopped).toEqual([]);
    clock.advance(2_000);
    expect((await monitor.checkOnce()).stopped).toEqual([id]);
    expect((await h.repository.get(id))?.record.stopReason).toBe("idle");
  });

  it("never stops a repl its owner keeps awake, and applies the idle timeout again once that is cleared", async () => {
    const id = await startRepl("awake", 60_000);
    const kept = await h.repls(alice).updateRepl({ replId: id, keepAwake: true });
    expect(kept.repl).toMatchObject({ keepAwake: true, idleTimeoutMs: 60_000 });
    clock.advance(24 * 3_600_000);
    expect((await monitor.checkOnce()).stopped).toEqual([]);
    expect((await h.repository.get(id))?.record.state).toBe("running");

    await h.repls(alice).updateRepl({ replId: id, keepAwake: false });
    expect((await monitor.checkOnce()).stopped).toEqual([id]);
  });

  it("checks only the repls this replica owns (or no replica owns)", async () => {
    const mine = await startRepl("mine");
    const theirs = await startRepl("theirs");
    const unowned = await startRepl("unowned");
    for (const [id, owner] of [
      [mine, "core_a"],
      [theirs, "core_b"],
    ] as const) {
      await h.repository.update(id, (current) => ({ ...current.record, ownerCoreId: owner }));
    }
    const replica = createIdleMonitor({
      lifecycle: h.lifecycle,
      orchestrator: h.orchestrator,
      defaultIdleTimeoutMs,
      now: clock.now,
      coreId: "core_a",
      status: {
        async status(instance) {
          asked.push(instance);
          return {
            replId: instance.replId,
            attachedClients: 1,
            sessionCount: 0,
            runningProcessCount: 0,
            busySessionCount: 0,
            lastActivityAtMs: 0,
            version: "test",
          };
        },
      },
    });
    expect((await replica.checkOnce()).checked.sort()).toEqual([mine, unowned].sort());
    expect(asked.map((instance) => instance.replId)).not.toContain(theirs);
  });

  it("writes activity at most every 30 s per repl", async () => {
    const id = await startRepl("chatty");
    const startedAt = clock.now();
    const written = async () => Number((await h.store.get(`repl-activity:${id}`))?.value ?? startedAt);
    answers.set(id, { attachedClients: 1 });
    clock.advance(10_000);
    await monitor.checkOnce();
    expect(await written()).toBe(startedAt);
    clock.advance(25_000);
    await monitor.checkOnce();
    expect(await written()).toBe(startedAt + 35_000);
    clock.advance(10_000);
    await monitor.checkOnce();
    expect(await written()).toBe(startedAt + 35_000);
  });

  it("does not take a silent runner for idle: counts failures in a row and leaves the repl running", async () => {
    const id = await startRepl("silent");
    answers.set(id, new Error("connection refused"));
    clock.advance(defaultIdleTimeoutMs * 3);
    for (let i = 0; i < 3; i++) {
      const report = await monitor.checkOnce();
      expect(report.unreachable).toEqual([id]);
      expect(report.stopped).toEqual([]);
    }
    expect(monitor.consecutiveFailures(id)).toBe(3);
    expect((await h.repository.get(id))?.record.state).toBe("running");

    answers.set(id, { attachedClients: 1 });
    await monitor.checkOnce();
    expect(monitor.consecutiveFailures(id)).toBe(0);
  });

  it("leaves an idle repl running when its save fails", async () => {
    const id = await startRepl("unsaved");
    h.save.fail = "bucket unreachable";
    clock.advance(defaultIdleTimeoutMs + 1_000);
    expect((await monitor.checkOnce()).stopped).toEqual([]);
    expect((await h.repository.get(id))?.record.state).toBe("running");
    expect(h.orchestrator.runners.get(id)?.phase).toBe("ready");
    expect(h.save.calls).toHaveLength(1);
  });
});
