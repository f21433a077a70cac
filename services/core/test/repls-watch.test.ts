import { Code } from "@connectrpc/connect";
import { ReplState, type WatchReplResponse } from "@devex/gen/devex/core/v1/repl_pb.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { UserRecord } from "../src/model.js";
import { codeOf, createReplHarness, type ReplHarness } from "./support/repls-harness.js";

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

/** Reads a watch stream into an array until it ends or `until` says so. */
async function collect(
  stream: AsyncIterable<WatchReplResponse>,
  until: (messages: WatchReplResponse[]) => boolean,
): Promise<WatchReplResponse[]> {
  const messages: WatchReplResponse[] = [];
  for await (const message of stream) {
    messages.push(message);
    if (until(messages)) break;
  }
  return messages;
}

describe("WatchRepl", () => {
  it("sends the current repl, every change with growing versions, then deleted and ends", async () => {
    const client = h.repls(alice);
    const id = (await client.createRepl({ name: "watched", templateName: "node" })).repl?.id ?? "";
    const stream = client.watchRepl({ replId: id, keepaliveIntervalMs: 10_000 });
    const received = collect(stream, () => false);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await client.startRepl({ replId: id });
    await client.stopRepl({ replId: id });
    await client.deleteRepl({ replId: id });
    const messages = await received;

    const repls = messages.flatMap((message) => (message.event.case === "repl" ? [message.event.value] : []));
    expect(repls[0]?.state).toBe(ReplState.CREATED);
    expect(repls.map((repl) => repl.state)).toEqual(
      expect.arrayContaining([ReplState.STARTING, ReplState.RUNNING, ReplState.STOPPING, ReplState.STOPPED]),
    );
    const versions = repls.map((repl) => repl.version);
    expect(versions).toEqual([...versions].sort((a, b) => (a < b ? -1 : 1)));
    expect(new Set(versions).size).toBe(versions.length);
    const last = messages[messages.length - 1];
    expect(last?.event.case).toBe("deleted");
    expect(last?.event.case === "deleted" && last.event.value.replId).toBe(id);
  });

  it("sends keepalives while nothing changes", async () => {
    const client = h.repls(alice);
    const id = (await client.createRepl({ name: "quiet", templateName: "node" })).repl?.id ?? "";
    const controller = new AbortController();
    const messages = await collect(
      client.watchRepl({ replId: id, keepaliveIntervalMs: 30 }, { signal: controller.signal }),
      (got) => got.filter((message) => message.event.case === "keepalive").length >= 3,
    );
    controller.abort();
    expect(messages[0]?.event.case).toBe("repl");
    expect(messages.slice(1).map((message) => message.event.case)).toEqual(["keepalive", "keepalive", "keepalive"]);
    const keepalive = messages[1]?.event;
    expect(keepalive?.case === "keepalive" && keepalive.value.sentAt).toBeTruthy();
  });

  it("sees a change committed by another replica, and releases its subscription when the client goes away", async () => {
    const client = h.repls(alice);
    const id = (await client.createRepl({ name: "far", templateName: "node" })).repl?.id ?? "";
    const messages = collect(client.watchRepl({ replId: id, keepaliveIntervalMs: 5_000 }), (got) =>
      got.some((message) => message.event.case === "repl" && message.event.value.name === "renamed"),
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(h.activeSubscriptions()).toBe(1);
    await h.replica().repls(alice).renameRepl({ replId: id, name: "renamed" });
    expect((await messages).length).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(h.activeSubscriptions()).toBe(0);
  });

  it("is NotFound for another user's repl", async () => {
    const id = (await h.repls(alice).createRepl({ name: "private", templateName: "node" })).repl?.id ?? "";
    expect(await codeOf(() => collect(h.repls(bob).watchRepl({ replId: id }), () => true))).toBe(Code.NotFound);
  });
});
