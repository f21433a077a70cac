import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AlreadyExistsError,
  AuthenticationError,
  CancelledError,
  Code,
  type ConnectError,
  Devex,
  DevexError,
  defaultMapError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  type Repl,
} from "../src/index.js";
import { type LiveCore, startLiveCore, uniqueName } from "./support/live.js";

let live: LiveCore;
let devex: Devex;

beforeAll(async () => {
  live = await startLiveCore();
  devex = new Devex({ baseUrl: live.core.url, apiKey: live.apiKey });
});
afterAll(async () => {
  await live?.close();
});

describe("templates", () => {
  it("lists the templates with converted fields and gets one by name", async () => {
    const templates = await devex.templates.list();
    expect(templates.map((t) => t.name)).toEqual(expect.arrayContaining(["blank", "node", "python"]));
    const node = await devex.templates.get("node");
    expect(node.updatedAt).toBeInstanceOf(Date);
    expect(node.language).toBe("javascript");
    expect(typeof node.sizeBytes).toBe("number");
    await expect(devex.templates.get("no-such-template")).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe("repls", () => {
  it("creates, gets by id and by name, lists with filters, and deletes", async () => {
    const name = uniqueName("crud");
    const repl = await devex.repls.create({ name, template: "blank", labels: { team: "sdk" } });
    expect(repl).toMatchObject({ name, templateName: "blank", state: "created", labels: { team: "sdk" } });
    expect(repl.id).toMatch(/^repl_[0-9a-z]{26}$/);
    expect(repl.createdAt).toBeInstanceOf(Date);
    expect(repl.idleTimeoutMs).toBe(300_000);

    expect((await devex.repls.get(repl.id)).name).toBe(name);
    expect((await devex.repls.get(name)).id).toBe(repl.id);
    expect((await devex.repls.list({ labels: { team: "sdk" } })).map((r) => r.id)).toEqual([repl.id]);
    expect(await devex.repls.list({ states: ["running"], labels: { team: "sdk" } })).toEqual([]);

    await devex.repls.delete(name);
    await expect(devex.repls.get(repl.id)).rejects.toBeInstanceOf(NotFoundError);
    await expect(devex.repls.delete(repl.id)).rejects.toBeInstanceOf(NotFoundError);
    await devex.repls.delete(repl.id, { allowMissing: true });
    await devex.repls.delete(name, { allowMissing: true });
  });

  it("maps failures to their error classes", async () => {
    const name = uniqueName("dup");
    await devex.repls.create({ name, template: "blank" });
    const duplicate = await devex.repls.create({ name, template: "blank" }).catch((e: unknown) => e);
    expect(duplicate).toBeInstanceOf(AlreadyExistsError);
    expect(duplicate).toMatchObject({ code: "already_exists" });

    const invalid = await devex.repls.create({ name: "Not_Valid", template: "blank" }).catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(InvalidArgumentError);
    expect((invalid as InvalidArgumentError).field).toBe("name");

    const badKey = new Devex({ baseUrl: live.core.url, apiKey: "dvx_not-a-key" });
    await expect(badKey.templates.list()).rejects.toBeInstanceOf(AuthenticationError);
    await devex.repls.delete(name);
  });

  it("lets mapError override the mapping", async () => {
    class Missing extends DevexError {}
    const custom = new Devex({
      baseUrl: live.core.url,
      apiKey: live.apiKey,
      mapError: (error: ConnectError) =>
        error.code === Code.NotFound ? new Missing("missing", { code: "not_found" }) : defaultMapError(error),
    });
    await expect(custom.repls.get("nobody-here")).rejects.toBeInstanceOf(Missing);
  });

  it("rejects an aborted call with CancelledError promptly", async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(devex.templates.list({ signal: controller.signal })).rejects.toBeInstanceOf(CancelledError);

    // Aborted while core is busy starting the runner.
    const repl = await devex.repls.create({ name: uniqueName("abort"), template: "blank" });
    const aborting = new AbortController();
    const started = Date.now();
    const starting = repl.start({ signal: aborting.signal });
    setTimeout(() => aborting.abort(), 20);
    await expect(starting).rejects.toBeInstanceOf(CancelledError);
    expect(Date.now() - started).toBeLessThan(1_000);
    await devex.repls.delete(repl.id);
  });
});

describe("a repl's lifecycle", () => {
  it("starts, refreshes, watches, snapshots, stops and restores", async () => {
    const created = await devex.repls.create({ name: uniqueName("life"), template: "blank" });
    const watched: Repl[] = [];
    const watching = new AbortController();
    const watcher = (async () => {
      for await (const repl of created.watch({ signal: watching.signal })) watched.push(repl);
    })();

    const running = await created.start();
    expect(running.state).toBe("running");
    expect(running.lastStartedAt).toBeInstanceOf(Date);
    expect((await created.refresh()).state).toBe("running");
    await expect(running.snapshots.restore(running.currentSnapshotId)).rejects.toBeInstanceOf(FailedPreconditionError);

    await running.fs.write("kept.txt", "before");
    const manual = await running.snapshots.create({ description: "with kept.txt" });
    expect(manual).toMatchObject({ reason: "manual", description: "with kept.txt", current: true });
    await running.fs.write("kept.txt", "after");

    const { repl: stopped, snapshot } = await running.stop();
    expect(stopped.state).toBe("stopped");
    expect(snapshot?.reason).toBe("stop");
    const reasons = (await stopped.snapshots.list()).map((s) => s.reason);
    expect(reasons).toEqual(["stop", "manual", "template-seed"]);

    const restored = await stopped.snapshots.restore(manual.id);
    expect(restored).toMatchObject({ reason: "restore", restoredFromSnapshotId: manual.id, current: true });
    const again = await stopped.start();
    expect(await again.fs.readText("kept.txt")).toBe("before");
    await again.stop();

    // The watch saw every state the repl went through, and stops when its signal aborts.
    watching.abort();
    await watcher;
    const states = watched.map((r) => r.state);
    expect(states[0]).toBe("created");
    expect(states).toEqual(expect.arrayContaining(["starting", "running", "stopping", "stopped"]));
    await devex.repls.delete(created.id);
  });
});
