import type { Client } from "@connectrpc/connect";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { guardEmulator } from "../src/terminal/emulator-guard.js";
import { AttachClient } from "./attach-client.js";
import { startTestRunner, type TestRunner } from "./harness.js";
import { newTerminal, observe, type Term, write } from "./screen-compare.js";

// Screen snapshots through a live runner: what a client attaching with `screenSnapshot` sees is what a
// client that saw all the output sees, cell by cell (issue 15's reproductions).

let t: TestRunner;
let terminal: Client<typeof TerminalService>;

beforeAll(async () => {
  t = await startTestRunner();
  terminal = await t.client(TerminalService);
});
afterAll(async () => {
  await t.close();
});

let counter = 0;
const newId = () => `snap${++counter}-${Date.now().toString(36)}`;

/** Starts `script` in a session of cols x rows and waits until its output ends with `ready`. */
async function startSession(script: string, cols: number, rows: number, ready: string): Promise<AttachClient> {
  const client = new AttachClient(terminal, {
    target: { case: "create", value: { sessionId: newId(), command: ["bash", "-c", script], cols, rows } } as never,
  });
  await client.until((c) => c.text.endsWith(ready), JSON.stringify(ready));
  return client;
}

/** Attaches a second client asking for a snapshot, and returns it with the snapshot's bytes. */
async function attachWithSnapshot(first: AttachClient): Promise<{ client: AttachClient; data: Uint8Array }> {
  const sessionId = first.of("attached")[0]?.session?.id ?? "";
  const client = new AttachClient(terminal, { target: { case: "sessionId", value: sessionId }, screenSnapshot: true });
  await client.until((c) => c.of("attached").length === 1, "attached");
  const data = client.of("attached")[0]?.snapshot?.data;
  expect(data?.length).toBeGreaterThan(0);
  return { client, data: data ?? new Uint8Array() };
}

/** A fresh terminal that was written `chunks`. */
async function rendered(cols: number, rows: number, ...chunks: Uint8Array[]): Promise<Term> {
  const term = newTerminal(cols, rows, 1000);
  // As the runner's model: xterm.js 6 itself throws on some output (see emulator-guard.ts).
  guardEmulator(term);
  for (const chunk of chunks) await write(term, chunk);
  return term;
}

async function close(...clients: AttachClient[]): Promise<void> {
  const sessionId = clients[0]?.of("attached")[0]?.session?.id ?? "";
  await terminal.closeSession({ sessionId, force: true });
  await Promise.all(clients.map((client) => client.disconnect()));
}

describe("a screen snapshot through the runner", () => {
  it("does not carry the pen into the alternate screen (a full-screen program shows plain text plain)", async () => {
    const script = "printf '\\e[?1049h\\e[H\\e[2Jplain text line\\r\\n\\e[7m'; sleep 120";
    const first = await startSession(script, 80, 24, "\x1b[7m");
    const { client, data } = await attachWithSnapshot(first);
    const late = await rendered(80, 24, data);
    const full = await rendered(80, 24, first.output);
    expect(late.buffer.active.type).toBe("alternate");
    const line = late.buffer.active.getLine(0);
    expect(line?.translateToString(true)).toBe("plain text line");
    for (let x = 0; x < "plain text line".length; x++) {
      expect(line?.getCell(x)?.isInverse(), `cell ${x} in reverse video`).toBe(0);
      expect(line?.getCell(x)?.isBold(), `cell ${x} in bold`).toBe(0);
    }
    expect(observe(late)).toEqual(observe(full));
    // The pen the program left (reverse video) is the one for what it writes next.
    await write(late, "z");
    await write(full, "z");
    expect(late.buffer.active.getLine(1)?.getCell(0)?.isInverse()).toBeTruthy();
    expect(observe(late)).toEqual(observe(full));
    await close(first, client);
  });

  it("puts the cursor where it is after a full last line (the pending wrap does not shift it)", async () => {
    const script = "printf '\\e[2J\\e[30;1H%s\\e[5;10H' \"$(printf 'x%.0s' $(seq 100))\"; sleep 120";
    const first = await startSession(script, 100, 30, "\x1b[5;10H");
    const { client, data } = await attachWithSnapshot(first);
    const late = await rendered(100, 30, data);
    expect([late.buffer.active.cursorX, late.buffer.active.cursorY]).toEqual([9, 4]);
    expect(observe(late)).toEqual(observe(await rendered(100, 30, first.output)));
    await close(first, client);
  });

  it("survives output that xterm.js 6 throws on (ED 1 in the bottom right corner of a fresh screen)", async () => {
    const first = await startSession("printf 'gone\\e[99;999H\\e[1Jkept'; sleep 120", 40, 5, "kept");
    const { client, data } = await attachWithSnapshot(first);
    const late = await rendered(40, 5, data);
    // "k" in the last column, the rest wrapped onto a new line.
    expect(late.buffer.active.getLine(late.buffer.active.baseY + 4)?.translateToString(true)).toBe("ept");
    expect(observe(late)).toEqual(observe(await rendered(40, 5, first.output)));
    await close(first, client);
  });

  it("resets a terminal in use, so a second snapshot written over the first (a resync) is exact too", async () => {
    // Attributes that a snapshot diffing against an assumed fresh pen got wrong: bold and dim apart,
    // underline styles, 256 and RGB colours, an underlined pen left on.
    const script = [
      "printf '\\e[1;2mboth\\e[22;2m dim\\e[22;1m bold\\e[0m \\e[4:3;58;5;196mcurly\\e[0m\\r\\n'",
      "printf '\\e[38;5;3mp256\\e[38;2;1;2;3m rgb\\e[48;5;17m bg\\e[0m\\e[4m'",
      "echo -n ready",
      "read -r _",
      "printf 'after first\\r\\n\\e[24mand plain'",
      "echo -n again",
      "sleep 120",
    ].join("; ");
    const first = await startSession(script, 60, 10, "ready");
    const second = await attachWithSnapshot(first);
    first.type("\r");
    await first.waitForText("again");
    await second.client.waitForText("again");
    const third = await attachWithSnapshot(first);
    // One terminal: the first snapshot, the output after it, then the second snapshot over all that.
    const resynced = await rendered(60, 10, second.data, second.client.output, third.data);
    const full = await rendered(60, 10, first.output);
    // The screen and cursor (the scrollback of the terminal in use keeps what it had above).
    const screen = (term: Term) => ({
      ...observe(term).normal,
      cells: observe(term).normal.cells.slice(-10),
      lines: [],
    });
    expect(screen(resynced)).toMatchObject({ cursor: screen(full).cursor, cells: screen(full).cells });
    expect(observe(await rendered(60, 10, third.data))).toEqual(observe(full));
    await write(resynced, "!");
    await write(full, "!");
    expect(screen(resynced)).toMatchObject({ cursor: screen(full).cursor, cells: screen(full).cells });
    await close(first, second.client, third.client);
  });
});
