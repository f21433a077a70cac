import type { Client } from "@connectrpc/connect";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { SessionState, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttachClient, plainBash } from "./attach-client.js";
import { startTestRunner, type TestRunner } from "./harness.js";

let t: TestRunner;
let terminal: Client<typeof TerminalService>;
let runner: Client<typeof RunnerService>;

beforeAll(async () => {
  t = await startTestRunner();
  terminal = await t.client(TerminalService);
  runner = await t.client(RunnerService, { role: "core" });
});
afterAll(async () => {
  await t.close();
});

let counter = 0;
const newId = () => `busy${++counter}-${Date.now().toString(36)}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls GetStatus until `predicate` holds, or fails naming `what`. */
async function statusUntil(predicate: (busy: number) => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { busySessionCount } = await runner.getStatus({});
    if (predicate(busySessionCount)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: busy_session_count ${busySessionCount}`);
    await sleep(50);
  }
}

/** A plain bash in a new session, at its prompt. */
async function shellAtPrompt(detachedLifetimeMs = 0): Promise<{ id: string; client: AttachClient }> {
  const id = newId();
  const client = new AttachClient(terminal, {
    target: { case: "create", value: { sessionId: id, command: plainBash, detachedLifetimeMs } } as never,
  });
  client.type("echo ready-$((40 + 2))\r");
  await client.waitForText("ready-42");
  return { id, client };
}

describe("busy terminal sessions", () => {
  it("GetStatus counts a shell running a command in the foreground, with or without a client, and not at its prompt", async () => {
    const { client } = await shellAtPrompt();
    expect((await runner.getStatus({})).busySessionCount).toBe(0);

    // A background job leaves the shell at its prompt: not busy.
    client.type("sleep 600 & echo bg-$((2 + 2))\r");
    await client.waitForText("bg-4");
    await sleep(300);
    expect((await runner.getStatus({})).busySessionCount).toBe(0);
    client.type("kill %1\r");

    client.type("sleep 3; echo slept-$((3 + 3))\r");
    await statusUntil((busy) => busy === 1, "the sleep to count");
    await client.disconnect();
    const detached = await runner.getStatus({});
    expect(detached.attachedClients).toBe(0);
    expect(detached.busySessionCount).toBe(1);
    // Back at its prompt once the sleep is over.
    await statusUntil((busy) => busy === 0, "the shell to be back at its prompt");
  });

  it("keeps a detached shell open past its detached lifetime while it runs a command, and closes it at its prompt", async () => {
    const idle = await shellAtPrompt(1_000);
    const busy = await shellAtPrompt(1_000);
    busy.client.type("sleep 4\r");
    await statusUntil((count) => count === 1, "the sleep to count");
    const detachedAt = Date.now();
    await Promise.all([idle.client.disconnect(), busy.client.disconnect()]);

    await sleep(2_500);
    const stateOf = async (id: string) => (await terminal.getSession({ sessionId: id })).session;
    expect((await stateOf(idle.id))?.exit?.signal).toBe("SIGHUP");
    expect((await stateOf(busy.id))?.state).toBe(SessionState.RUNNING);

    const deadline = Date.now() + 15_000;
    while ((await stateOf(busy.id))?.state === SessionState.RUNNING && Date.now() < deadline) await sleep(100);
    const closed = await stateOf(busy.id);
    expect(closed?.state).toBe(SessionState.EXITED);
    // Closed by the runner (SIGHUP) once its lifetime had passed after the sleep, not by the shell itself.
    expect(closed?.exit?.signal).toBe("SIGHUP");
    expect(Date.now() - detachedAt).toBeGreaterThan(4_000);
  });
});
