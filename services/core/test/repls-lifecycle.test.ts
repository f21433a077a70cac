import { Code } from "@connectrpc/connect";
import { ReplState } from "@devex/gen/devex/core/v1/repl_pb.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ReplStateName, UserRecord } from "../src/model.js";
import { canTransition, replTransitions } from "../src/repls/state-machine.js";
import { codeOf, createReplHarness, type ReplHarness } from "./support/repls-harness.js";

let h: ReplHarness;
let alice: UserRecord;
let admin: UserRecord;

beforeEach(async () => {
  h = await createReplHarness();
  alice = await h.addUser("alice");
  admin = await h.addUser("root", { admin: true });
});
afterEach(async () => {
  await h.close();
});

const createRepl = async (name: string) =>
  (await h.repls(alice).createRepl({ name, templateName: "node" })).repl?.id ?? "";

const shuffle = <T>(items: T[]): T[] => {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
};

describe("the state machine", () => {
  it("allows exactly the documented transitions", () => {
    const states = Object.keys(replTransitions) as ReplStateName[];
    const allowed = states.flatMap((from) =>
      states.filter((to) => from !== to && canTransition(from, to)).map((to) => `${from}>${to}`),
    );
    expect(allowed.sort()).toEqual(
      [
        "created>starting",
        "created>deleting",
        "stopped>starting",
        "stopped>deleting",
        "failed>starting",
        "failed>deleting",
        "starting>running",
        "starting>failed",
        "starting>stopping",
        "starting>deleting",
        "running>stopping",
        "running>failed",
        "running>deleting",
        "stopping>stopped",
        "stopping>running",
        "stopping>deleting",
      ].sort(),
    );
    expect(canTransition("deleting", "deleting")).toBe(true);
    expect(canTransition("created", "running")).toBe(false);
  });

  it("refuses an illegal transition at the repository with FailedPrecondition and writes nothing", async () => {
    const id = await createRepl("sm");
    expect(
      await codeOf(() => h.repository.update(id, ({ record }) => ({ ...record, state: "running" as const }))),
    ).toBe(Code.FailedPrecondition);
    expect((await h.repository.get(id))?.version).toBe(1);
  });
});

describe("concurrent transitions", () => {
  it("runs one start for many concurrent starts, all answering RUNNING", async () => {
    const id = await createRepl("many");
    h.orchestrator.readyDelayMs = 30;
    const results = await Promise.all(Array.from({ length: 10 }, () => h.repls(alice).startRepl({ replId: id })));
    expect(new Set(results.map((result) => result.repl?.state))).toEqual(new Set([ReplState.RUNNING]));
    expect(new Set(results.map((result) => result.repl?.version))).toEqual(new Set([3n]));
    expect(h.orchestrator.count("start", id)).toBe(1);
    expect(await h.consistency(id)).toBeUndefined();
  });

  it("makes a stop during a start wait for it, then stop; a start during a stop waits, then starts", async () => {
    const id = await createRepl("order");
    h.orchestrator.readyDelayMs = 50;
    const start = h.repls(alice).startRepl({ replId: id });
    await new Promise((resolve) => setTimeout(resolve, 5));
    const stop = h.repls(alice).stopRepl({ replId: id });
    expect((await start).repl?.state).toBe(ReplState.RUNNING);
    expect((await stop).repl?.state).toBe(ReplState.STOPPED);
    expect(h.save.calls).toHaveLength(1);
    expect(await h.consistency(id)).toBeUndefined();

    h.orchestrator.readyDelayMs = 0;
    await h.repls(alice).startRepl({ replId: id });
    h.save.delayMs = 50;
    const stop2 = h.repls(alice).stopRepl({ replId: id });
    await new Promise((resolve) => setTimeout(resolve, 5));
    const start2 = h.repls(alice).startRepl({ replId: id });
    expect((await stop2).repl?.state).toBe(ReplState.STOPPED);
    expect((await start2).repl?.state).toBe(ReplState.RUNNING);
    expect(h.orchestrator.count("start", id)).toBe(3);
    expect(await h.consistency(id)).toBeUndefined();
  });

  it("ends storms of parallel starts and stops in one consistent state with the orchestrator", async () => {
    const id = await createRepl("storm");
    h.orchestrator.readyDelayMs = () => Math.floor(Math.random() * 15);
    for (let round = 0; round < 6; round++) {
      h.save.delayMs = Math.floor(Math.random() * 10);
      const calls = shuffle([
        ...Array.from({ length: 10 }, () => () => h.repls(alice).startRepl({ replId: id })),
        ...Array.from({ length: 10 }, () => () => h.repls(alice).stopRepl({ replId: id })),
      ]);
      const settled = await Promise.allSettled(
        calls.map(async (call, i) => {
          await new Promise((resolve) => setTimeout(resolve, i % 4));
          return call();
        }),
      );
      expect(settled.filter((result) => result.status === "rejected")).toEqual([]);
      const state = (await h.repository.get(id))?.record.state;
      expect(["running", "stopped"]).toContain(state);
      expect(await h.consistency(id)).toBeUndefined();
    }
    // Every save ran while its runner was there, and every stop that tore one down had saved first.
    expect(h.orchestrator.violations).toEqual([]);
    expect(h.save.calls.length).toBe(h.orchestrator.count("stop", id));
  });

  it("stays consistent when starts and stops come through two core replicas", async () => {
    const id = await createRepl("replicas");
    const other = h.replica();
    h.orchestrator.readyDelayMs = () => Math.floor(Math.random() * 15);
    h.orchestrator.stopDelayMs = () => Math.floor(Math.random() * 10);
    for (let round = 0; round < 4; round++) {
      const calls = shuffle([
        ...Array.from({ length: 5 }, () => () => h.repls(alice).startRepl({ replId: id })),
        ...Array.from({ length: 5 }, () => () => other.repls(alice).startRepl({ replId: id })),
        ...Array.from({ length: 5 }, () => () => h.repls(alice).stopRepl({ replId: id })),
        ...Array.from({ length: 5 }, () => () => other.repls(alice).stopRepl({ replId: id })),
      ]);
      const codes = await Promise.all(calls.map((call) => codeOf(call)));
      expect(codes.filter((code) => code !== "ok")).toEqual([]);
      expect(await h.consistency(id)).toBeUndefined();
    }
  });

  it("stays consistent when admin force stops (skip_save) on another replica race with starts", async () => {
    const id = await createRepl("force-storm");
    // The force stops run on another replica, so they cannot abort the starts in process: only the record tells.
    const other = h.replica();
    h.orchestrator.readyDelayMs = () => Math.floor(Math.random() * 20);
    h.orchestrator.stopDelayMs = () => Math.floor(Math.random() * 10);
    for (let round = 0; round < 15; round++) {
      const calls = shuffle([
        ...Array.from({ length: 8 }, () => ({
          kind: "start",
          call: () => h.repls(alice).startRepl({ replId: id }),
        })),
        ...Array.from({ length: 3 }, () => ({
          kind: "force",
          call: () => other.admin(admin).forceStopRepl({ replId: id, skipSave: true }),
        })),
        { kind: "force", call: () => h.admin(admin).forceStopRepl({ replId: id, skipSave: true }) },
      ]);
      const outcomes = await Promise.all(
        calls.map(async ({ kind, call }, i) => {
          await new Promise((resolve) => setTimeout(resolve, i % 5));
          return { kind, code: await codeOf(call) };
        }),
      );
      // A force stop always succeeds; a start it aborted says so with Aborted.
      expect(outcomes.filter(({ kind, code }) => kind === "force" && code !== "ok")).toEqual([]);
      expect(outcomes.filter(({ code }) => code !== "ok" && code !== Code.Aborted)).toEqual([]);
      const state = (await h.repository.get(id))?.record.state;
      expect(["running", "stopped"]).toContain(state);
      expect(await h.consistency(id)).toBeUndefined();
    }
  });

  it("finishes a start in the background when the caller's deadline passes", async () => {
    const id = await createRepl("deadline");
    h.orchestrator.readyDelayMs = 80;
    const code = await codeOf(() => h.repls(alice).startRepl({ replId: id }, { timeoutMs: 20 }));
    expect(code).toBe(Code.DeadlineExceeded);
    expect((await h.repository.get(id))?.record.state).toBe("starting");
    const running = await h.repository.waitForChange(id, (await h.repository.get(id))?.version ?? 0);
    expect(running?.record.state).toBe("running");
    expect(await h.consistency(id)).toBeUndefined();
  });

  it("stops every repl holding a runner at shutdown with reason system, saving each", async () => {
    const running = await createRepl("up");
    await h.repls(alice).startRepl({ replId: running });
    const created = await createRepl("down");
    await h.lifecycle.stopAll("system");
    expect((await h.repository.get(running))?.record).toMatchObject({ state: "stopped", stopReason: "system" });
    expect((await h.repository.get(created))?.record.state).toBe("created");
    expect(h.save.calls).toEqual([{ replId: running, reason: "system" }]);
    expect(h.orchestrator.runners.size).toBe(0);
  });
});
