import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Client } from "@connectrpc/connect";
import { type AttachOpen, SessionState, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import xtermHeadless from "@xterm/headless";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttachClient } from "./attach-client.js";
import { startTestRunner, type TestRunner } from "./harness.js";

const { Terminal } = xtermHeadless;
/** The smallest scrollback the runner allows, so the tests overflow it with little output. */
const scrollbackBytes = 256 * 1024;
let t: TestRunner;
let terminal: Client<typeof TerminalService>;

beforeAll(async () => {
  t = await startTestRunner(["--scrollback-bytes", String(scrollbackBytes)]);
  terminal = await t.client(TerminalService);
});
afterAll(async () => {
  await t.close();
});

let counter = 0;
const newId = () => `bp${++counter}-${Date.now().toString(36)}`;

/**
 * A program that passes its output through unchanged (no echo, no newline translation), prints READY, waits
 * for a line of input, then runs `script`.
 */
const gated = (script: string) => ["bash", "-c", `stty -opost -echo; printf READY; read x; ${script}`];

/** Creates a session running `command` with `first` attached from offset 0, and starts it once READY. */
async function startGated(
  command: string[],
  first: (open: Partial<AttachOpen>) => AttachClient,
): Promise<AttachClient> {
  const client = first({ target: { case: "create", value: { sessionId: newId(), command } } as never });
  await client.until((c) => c.outputLength >= 5, "READY");
  client.type("\r");
  return client;
}

/** Asserts the client's output events are one contiguous run from offset 0 with no `lagged` between them. */
function expectContiguous(client: AttachClient): void {
  expect(client.of("lagged")).toEqual([]);
  let next = 0n;
  for (const output of client.of("output")) {
    expect(output.offset).toBe(next);
    next += BigInt(output.data.length);
  }
}

/** A client on a connection of its own that reads nothing after `attached` until told to. */
async function attachStalled(open: Partial<AttachOpen>): Promise<AttachClient> {
  // Its own connection, as a real client has: a stalled stream holds up its connection's flow-control window.
  const client = new AttachClient(await t.client(TerminalService), open, { read: false });
  await client.until((c) => c.of("attached").length === 1, "attached");
  return client;
}

/** Waits until the session's output stops growing (its program blocked on write), and returns its length. */
async function untilBlocked(sessionId: string): Promise<number> {
  let offset = -1;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { session } = await terminal.getSession({ sessionId });
    if (Number(session?.outputOffset) === offset) return offset;
    offset = Number(session?.outputOffset);
  }
}

/** The offset of the next byte the client will receive: after its last output, or where a `lagged` resumed. */
function position(client: AttachClient): bigint {
  let next = 0n;
  for (const event of client.events) {
    if (event.case === "output") next = event.value.offset + BigInt(event.value.data.length);
    if (event.case === "lagged") next = event.value.resumeOffset;
  }
  return next;
}

/** About `bytes` of random text in lines of 76 characters, as `base64` prints it. */
function base64Lines(bytes: number): Buffer {
  return Buffer.from(
    randomBytes((bytes * 3) / 4)
      .toString("base64")
      .replace(/(.{76})/g, "$1\n"),
  );
}

/** The visible lines of a fresh 80x24 terminal after `data`. */
async function render(data: Uint8Array): Promise<string[]> {
  const term = new Terminal({ cols: 80, rows: 24, allowProposedApi: true });
  await new Promise<void>((resolve) => term.write(data, resolve));
  const buffer = term.buffer.active;
  const lines: string[] = [];
  for (let y = buffer.baseY; y < buffer.baseY + 24; y++) lines.push(buffer.getLine(y)?.translateToString(true) ?? "");
  term.dispose();
  return lines;
}

describe("a single client slower than the program", () => {
  it("gets every byte of a 4 MiB file in order, with no gap: the program waits for it", async () => {
    const file = base64Lines(4 * 1024 * 1024);
    await writeFile(join(t.workspace, "four.b64"), file);
    const client = await startGated(
      gated("cat four.b64"),
      (open) => new AttachClient(terminal, open, { readDelayMs: 5 }),
    );
    // The exit event, not a clean end of the stream: connect-node resets a stream the client has not closed
    // its side of right after the trailers, and a client still reading then sees "Premature close".
    await client.until((c) => c.of("exit").length === 1, "the exit", 25_000);
    expectContiguous(client);
    expect(client.output.equals(Buffer.concat([Buffer.from("READY"), file]))).toBe(true);
    expect(client.of("exit")[0]?.offset).toBe(BigInt(5 + file.length));
  }, 30_000);

  it("gets every byte of a 50 MB stream in order, with no gap", async () => {
    const client = await startGated(
      gated("head -c 50000000 /dev/urandom | base64 | tee stream.b64"),
      (open) => new AttachClient(terminal, open, { readDelayMs: 1 }),
    );
    await client.until((c) => c.of("exit").length === 1, "the exit", 28_000);
    expectContiguous(client);
    const file = await readFile(join(t.workspace, "stream.b64"));
    expect(file.length).toBeGreaterThan(50_000_000);
    expect(client.outputLength).toBe(5 + file.length);
    expect(client.output.subarray(5).equals(file)).toBe(true);
  }, 30_000);

  it("blocks the program while the client reads nothing, and lets it go when the client disconnects", async () => {
    const id = newId();
    const command = gated("base64 /dev/urandom | head -c 3000000; printf END");
    const stalled = await attachStalled({ target: { case: "create", value: { sessionId: id, command } } as never });
    await terminal.writeInput({ sessionId: id, data: new TextEncoder().encode("\r") });
    // The program stops once the client is far enough behind, long before its end.
    expect(await untilBlocked(id)).toBeLessThan(3_000_000);
    // Without a client nothing holds the program back: it finishes into the scrollback.
    await stalled.disconnect();
    await expect
      .poll(async () => (await terminal.getSession({ sessionId: id })).session?.state, { timeout: 15_000 })
      .toBe(SessionState.EXITED);
    const { session } = await terminal.getSession({ sessionId: id });
    expect(Number(session?.outputOffset)).toBe(5 + 3_000_000 + 3);
  });

  it("delivers all a program wrote before it ended while waiting for the client, then the exit", async () => {
    const id = newId();
    // 1,000 bytes at a time, counting in a file each write the terminal took.
    const command = gated(`i=0; while :; do printf '%01000d' 0; i=$((i+1)); echo $i > ${id}.count; done`);
    const stalled = await attachStalled({ target: { case: "create", value: { sessionId: id, command } } as never });
    await terminal.writeInput({ sessionId: id, data: new TextEncoder().encode("\r") });
    await untilBlocked(id);
    await terminal.closeSession({ sessionId: id, gracePeriodMs: 1_000 });
    // node-pty stops reading 200 ms after the program ended: what it had not read by then would be lost.
    await new Promise((resolve) => setTimeout(resolve, 500));
    stalled.startReading();
    await stalled.until((c) => c.of("exit").length === 1, "the exit");
    expectContiguous(stalled);
    const written = Number(await readFile(join(t.workspace, `${id}.count`), "utf8"));
    expect(stalled.outputLength).toBeGreaterThanOrEqual(5 + written * 1_000);
    expect(stalled.of("exit")[0]?.offset).toBe(BigInt(stalled.outputLength));
  });
});

describe("two clients, one stalled", () => {
  it("gives the reading client everything at once, and tells the stalled one exactly what it skipped", async () => {
    const file = base64Lines(3 * 1024 * 1024);
    // The terminal turns each "\n" into "\r\n".
    const produced = 5 + file.length + file.toString().split("\n").length - 1 + 3;
    await writeFile(join(t.workspace, "three.b64"), file);
    const id = newId();
    const command = ["bash", "-c", "stty -echo; printf READY; read x; cat three.b64; printf END; read x; printf MORE"];
    const reader = new AttachClient(terminal, {
      target: { case: "create", value: { sessionId: id, command } } as never,
    });
    await reader.until((c) => c.outputLength >= 5, "READY");
    const stalled = await attachStalled({
      target: { case: "sessionId", value: id },
      fromOffset: 0n,
      screenSnapshot: true,
    });
    reader.type("\r");
    await reader.until((c) => c.endOffset === BigInt(produced), "the end of the output", 20_000);
    expectContiguous(reader);
    expect(reader.output.subarray(-3).toString()).toBe("END");
    expect(stalled.outputLength).toBeLessThan(produced);

    stalled.startReading();
    await stalled.until((c) => position(c) === BigInt(produced), "the stalled client catches up");
    expect(stalled.of("lagged").length).toBeGreaterThan(0);
    // Output after the catch-up follows on, for both.
    reader.type("\r");
    for (const client of [reader, stalled]) await client.until((c) => c.of("exit").length === 1, "the exit");
    expect(reader.output.subarray(produced).toString()).toBe("MORE");
    expect(stalled.output.subarray(-4).toString()).toBe("MORE");
    // Walk the stalled client's events: output is contiguous except where a `lagged` says what was skipped.
    let next = 0n;
    let skipped = 0n;
    for (const event of stalled.events) {
      if (event.case === "output") {
        expect(event.value.offset).toBe(next);
        const at = Number(event.value.offset);
        expect(Buffer.from(event.value.data).equals(reader.output.subarray(at, at + event.value.data.length))).toBe(
          true,
        );
        next += BigInt(event.value.data.length);
      } else if (event.case === "lagged") {
        expect(event.value.skippedFromOffset).toBe(next);
        expect(event.value.resumeOffset).toBeGreaterThan(next);
        expect(event.value.snapshot?.offset).toBe(event.value.resumeOffset);
        // The snapshot shows what the reader's screen showed at that offset (from a line start well before it).
        const at = Number(event.value.resumeOffset);
        const from = reader.output.indexOf("\r\n", Math.max(0, at - 65_536)) + 2;
        expect(await render(event.value.snapshot?.data ?? new Uint8Array())).toEqual(
          await render(reader.output.subarray(from, at)),
        );
        skipped += event.value.resumeOffset - next;
        next = event.value.resumeOffset;
      }
    }
    expect(BigInt(stalled.outputLength) + skipped).toBe(BigInt(produced + 4));
  });
});
