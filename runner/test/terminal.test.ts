import { create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { Signal } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { AttachRequestSchema, SessionState, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import xtermHeadless from "@xterm/headless";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttachClient, plainBash } from "./attach-client.js";
import { startTestRunner, type TestRunner } from "./harness.js";

const { Terminal } = xtermHeadless;
let t: TestRunner;
let terminal: Client<typeof TerminalService>;

beforeAll(async () => {
  t = await startTestRunner(["--scrollback-bytes", String(256 * 1024), "--keepalive-ms", "300"]);
  terminal = await t.client(TerminalService);
});
afterAll(async () => {
  await t.close();
});

let counter = 0;
const newId = () => `t${++counter}-${Date.now().toString(36)}`;

/** Renders bytes in a fresh emulator and returns its visible lines. */
async function render(cols: number, rows: number, ...chunks: Uint8Array[]): Promise<string[]> {
  const term = new Terminal({ cols, rows, allowProposedApi: true, scrollback: 1000 });
  for (const chunk of chunks) await new Promise<void>((resolve) => term.write(chunk, resolve));
  const buffer = term.buffer.active;
  const lines: string[] = [];
  for (let y = buffer.baseY; y < buffer.baseY + rows; y++) lines.push(buffer.getLine(y)?.translateToString(true) ?? "");
  term.dispose();
  return lines;
}

describe("Attach", () => {
  it("types into a real shell and streams its output back", async () => {
    const c = new AttachClient(terminal, {
      target: { case: "create", value: { sessionId: newId(), command: plainBash } } as never,
    });
    c.type("echo $((6 * 7))-answer\r");
    await c.waitForText("42-answer");
    const attached = c.of("attached")[0];
    expect(attached?.session?.state).toBe(SessionState.RUNNING);
    expect(attached?.offset).toBe(0n);
    await c.disconnect();
  });

  it("resizes the PTY (stty size) and tells every client", async () => {
    const id = newId();
    const a = new AttachClient(terminal, {
      target: { case: "create", value: { sessionId: id, command: plainBash, cols: 80, rows: 24 } } as never,
    });
    await a.until((c) => c.of("attached").length === 1, "attached");
    const b = new AttachClient(terminal, { target: { case: "sessionId", value: id } });
    await b.until((c) => c.of("attached").length === 1, "attached");
    a.resize(132, 43);
    await b.until((c) => c.of("resized").some((r) => r.cols === 132 && r.rows === 43), "resized event");
    a.type("stty size\r");
    await a.waitForText("43 132");
    await terminal.resizeSession({ sessionId: id, cols: 100, rows: 30 });
    a.type("stty size\r");
    await a.waitForText("30 100");
    await a.until((c) => c.of("resized").some((r) => r.cols === 100), "resized after ResizeSession");
    await Promise.all([a.disconnect(), b.disconnect()]);
  });

  it("keeps input order exactly and gives two clients the same bytes", async () => {
    const id = newId();
    const a = new AttachClient(terminal, {
      target: {
        case: "create",
        value: { sessionId: id, command: ["bash", "-c", "stty raw -echo; exec cat"] },
      } as never,
    });
    await a.until((c) => c.of("attached").length === 1, "attached");
    const b = new AttachClient(terminal, { target: { case: "sessionId", value: id }, fromOffset: 0n });
    await new Promise((resolve) => setTimeout(resolve, 300));
    let expected = "";
    for (let i = 0; i < 1000; i++) {
      const piece = `${i % 10}`;
      expected += piece;
      a.type(piece);
    }
    await a.until((c) => c.text.endsWith(expected), "all 1,000 writes echoed in order");
    await b.until((c) => c.text.endsWith(expected), "the second client sees the same");
    expect(b.output.equals(a.output)).toBe(true);
    await Promise.all([a.disconnect(), b.disconnect()]);
  });

  it("delivers the exit status to every attached client", async () => {
    const id = newId();
    const a = new AttachClient(terminal, {
      target: { case: "create", value: { sessionId: id, command: plainBash } } as never,
    });
    await a.until((c) => c.of("attached").length === 1, "attached");
    const b = new AttachClient(terminal, { target: { case: "sessionId", value: id } });
    await b.until((c) => c.of("attached").length === 1, "attached");
    a.type("exit 7\r");
    for (const c of [a, b]) {
      await c.until((x) => x.done, "stream end");
      const exit = c.of("exit")[0];
      expect(exit?.status?.exitCode).toBe(7);
      expect(c.error).toBeUndefined();
    }
    const { session } = await terminal.getSession({ sessionId: id });
    expect(session?.state).toBe(SessionState.EXITED);
    expect(session?.exit?.exitCode).toBe(7);
  });

  it("replays exactly what a client missed when it reattaches from an offset", async () => {
    const id = newId();
    const a = new AttachClient(terminal, {
      target: { case: "create", value: { sessionId: id, command: plainBash } } as never,
    });
    a.type("echo first-part\r");
    await a.waitForText("first-part\r\n");
    await a.until((c) => c.text.endsWith("# ") || c.text.endsWith("$ "), "prompt");
    const seen = a.endOffset;
    const before = a.output;
    await a.disconnect();
    const writer = new AttachClient(terminal, { target: { case: "sessionId", value: id }, fromOffset: 0n });
    writer.type("for i in $(seq 1 200); do echo line-$i; done\r");
    await writer.waitForText("line-200\r\n");
    const again = new AttachClient(terminal, { target: { case: "sessionId", value: id }, fromOffset: seen });
    await again.until((c) => c.text.includes("line-200\r\n"), "replay of missed output");
    expect(again.of("attached")[0]?.replayTruncated).toBe(false);
    expect(again.firstOffset).toBe(seen);
    const stitched = Buffer.concat([before, again.output]);
    expect(stitched.subarray(0, writer.outputLength).equals(writer.output.subarray(0, stitched.length))).toBe(true);
    await Promise.all([writer.disconnect(), again.disconnect()]);
  });

  it("says so when the offset has left the scrollback buffer", async () => {
    const id = newId();
    const a = new AttachClient(terminal, {
      target: {
        case: "create",
        value: { sessionId: id, command: ["bash", "-c", "head -c 700000 /dev/zero | tr '\\0' x; sleep 30"] },
      } as never,
    });
    await a.until((c) => c.endOffset >= 700_000n, "flood");
    const late = new AttachClient(terminal, { target: { case: "sessionId", value: id }, fromOffset: 10n });
    await late.until((c) => c.of("attached").length === 1, "attached");
    const attached = late.of("attached")[0];
    expect(attached?.replayTruncated).toBe(true);
    expect(attached?.oldestRetainedOffset).toBeGreaterThan(10n);
    expect(attached?.offset).toBe(attached?.oldestRetainedOffset);
    await late.until((c) => c.endOffset >= 700_000n, "replay of what is retained");
    expect(late.outputLength).toBeLessThanOrEqual(256 * 1024);
    await Promise.all([a.disconnect(), late.disconnect()]);
    await terminal.closeSession({ sessionId: id, force: true });
  });

  it("gives a client that attaches during vim the same screen as one that saw everything", async () => {
    const id = newId();
    const path = `notes-${id}.txt`;
    const a = new AttachClient(terminal, {
      target: {
        case: "create",
        value: { sessionId: id, command: ["vim", "-u", "NONE", "-N", "-n", path], cols: 80, rows: 24 },
      } as never,
    });
    await a.waitForText(path);
    a.type("ihello from vim\rsecond line\x1b");
    a.type(":set number\r");
    await a.until((c) => c.text.includes("second line"), "typed text");
    await new Promise((resolve) => setTimeout(resolve, 300));
    const b = new AttachClient(terminal, { target: { case: "sessionId", value: id }, screenSnapshot: true });
    await b.until((c) => c.of("attached").length === 1, "attached");
    const snapshot = b.of("attached")[0]?.snapshot;
    expect(snapshot?.data.length).toBeGreaterThan(0);
    expect(snapshot?.cols).toBe(80);
    a.type("Gosaved third\x1b");
    await a.waitForText("saved third");
    await b.until((c) => c.text.includes("saved third"), "live output after the snapshot");
    await new Promise((resolve) => setTimeout(resolve, 200));
    const full = await render(80, 24, a.output);
    const late = await render(80, 24, snapshot?.data ?? new Uint8Array(), b.output);
    expect(late).toEqual(full);
    expect(full.join("\n")).toContain("1 hello from vim");
    expect(full.join("\n")).toContain("3 saved third");
    const screen = await terminal.getScreen({ sessionId: id });
    expect(screen.alternateScreen).toBe(true);
    // GetScreen drops trailing spaces, the ones vim clears its lines with too.
    expect(screen.lines).toEqual(full.map((line) => line.replace(/ +$/, "")));
    a.type(":q!\r");
    await a.until((c) => c.done, "vim exits");
    await b.until((c) => c.done, "vim exits for the late client");
  });

  it("never lets a stalled client hold up the PTY or the other clients", async () => {
    const id = newId();
    // About 3 MB in 300 bursts: far more than the 256 KiB scrollback, at a pace a reading client keeps up with.
    const script =
      "read; for i in $(seq 1 300); do head -c 7500 /dev/urandom | base64 -w 100; sleep 0.002; done; echo END-OF-FLOOD; sleep 60";
    // The stalled client has its own connection, as a real one would: HTTP/2 flow control
    // of a shared connection would otherwise stall the test's other client, not the runner.
    const stalled = new AttachClient(
      await t.client(TerminalService),
      { target: { case: "create", value: { sessionId: id, command: ["bash", "-c", script] } } as never },
      { read: false },
    );
    await stalled.until((c) => c.of("attached").length === 1, "attached");
    const reader = new AttachClient(terminal, { target: { case: "sessionId", value: id }, fromOffset: 0n });
    await reader.until((c) => c.of("attached").length === 1, "attached");
    reader.type("\r");
    await reader.waitForText("END-OF-FLOOD", 60_000);
    const { session } = await terminal.getSession({ sessionId: id });
    const produced = Number(session?.outputOffset);
    expect(produced).toBeGreaterThan(3_000_000);
    expect(reader.of("lagged")).toEqual([]);
    expect(reader.outputLength).toBe(produced);
    stalled.startReading();
    await stalled.until((c) => c.text.includes("END-OF-FLOOD"), "the stalled client catches up", 30_000);
    const lagged = stalled.of("lagged");
    expect(lagged.length).toBeGreaterThan(0);
    // After each gap the stalled client gets exactly the bytes the reader got at those offsets.
    for (const event of stalled.of("output")) {
      const at = Number(event.offset);
      expect(Buffer.from(event.data).equals(reader.output.subarray(at, at + event.data.length))).toBe(true);
    }
    const skipped = lagged.reduce((sum, l) => sum + Number(l.resumeOffset - l.skippedFromOffset), 0);
    expect(stalled.outputLength + skipped).toBe(produced);
    await Promise.all([stalled.disconnect(), reader.disconnect()]);
    await terminal.closeSession({ sessionId: id, force: true });
  }, 120_000);

  it("sends keepalives on a silent stream and answers pings", async () => {
    const c = new AttachClient(terminal, {
      target: { case: "create", value: { sessionId: newId(), command: ["sleep", "30"] } } as never,
    });
    await c.until((x) => x.of("keepalive").length >= 2, "two keepalives");
    c.ping(42n);
    await c.until((x) => x.of("pong").some((p) => p.nonce === 42n), "pong");
    await c.disconnect();
  });

  it("refuses bad opens with the right codes", async () => {
    const cases: [string, Parameters<typeof open>[0], Code][] = [
      ["unknown session", { target: { case: "sessionId", value: "nope" } }, Code.NotFound],
      ["cwd outside", { target: { case: "create", value: { cwd: "../.." } } as never }, Code.PermissionDenied],
      ["cwd missing", { target: { case: "create", value: { cwd: "no/such/dir" } } as never }, Code.NotFound],
      [
        "no such command",
        { target: { case: "create", value: { command: ["definitely-not-a-command"] } } as never },
        Code.NotFound,
      ],
      ["bad id", { target: { case: "sessionId", value: "Bad_Id" } }, Code.InvalidArgument],
      ["cols without rows", { target: { case: "sessionId", value: "x" }, cols: 10 }, Code.InvalidArgument],
    ];
    async function open(value: object): Promise<ConnectError | undefined> {
      const c = new AttachClient(terminal, value);
      await c.until((x) => x.done || x.of("attached").length > 0, "an answer");
      await c.disconnect();
      return c.error === undefined ? undefined : ConnectError.from(c.error);
    }
    for (const [name, value, code] of cases) {
      const error = await open(value);
      expect(error?.code, name).toBe(code);
    }
    const id = newId();
    await terminal.createSession({ spec: { sessionId: id, command: ["sleep", "30"] } });
    await expect(terminal.createSession({ spec: { sessionId: id } })).rejects.toMatchObject({
      code: Code.AlreadyExists,
    });
    const beyond = await open({ target: { case: "sessionId", value: id }, fromOffset: 1_000_000n });
    expect(beyond?.code).toBe(Code.OutOfRange);
    const notOpen = new AttachClient(terminal, { target: { case: "sessionId", value: id } });
    notOpen.send(
      create(AttachRequestSchema, { kind: { case: "open", value: { target: { case: "sessionId", value: id } } } }),
    );
    await notOpen.until((x) => x.done, "stream end");
    expect(ConnectError.from(notOpen.error).code).toBe(Code.InvalidArgument);
    await terminal.closeSession({ sessionId: id, force: true });
  });

  it("detaches a client that closes its side, once the answer to its last input has come; the session runs on", async () => {
    const id = newId();
    const c = new AttachClient(terminal, {
      target: { case: "create", value: { sessionId: id, command: plainBash } } as never,
    });
    await c.until((x) => x.of("attached").length === 1, "attached");
    expect((await terminal.getSession({ sessionId: id })).session?.attachedClients).toBe(1);
    c.type("sleep 0.5; echo half-$((6*7))\r");
    const began = Date.now();
    await c.finish();
    expect(c.error).toBeUndefined();
    expect(c.text).toContain("half-42");
    expect(c.of("exit")).toHaveLength(0);
    // Two seconds with nothing to send, not the ten-second limit.
    expect(Date.now() - began).toBeLessThan(8_000);
    const { session } = await terminal.getSession({ sessionId: id });
    expect(session?.attachedClients).toBe(0);
    expect(session?.state).toBe(SessionState.RUNNING);
    await terminal.closeSession({ sessionId: id, force: true });
  });

  it("detaches a client that closes its side at the latest after ten seconds, however busy the program", async () => {
    const id = newId();
    const c = new AttachClient(terminal, {
      target: {
        case: "create",
        value: { sessionId: id, command: ["bash", "-c", "while :; do echo busy; sleep 0.2; done"] },
      } as never,
    });
    await c.waitForText("busy");
    const began = Date.now();
    await c.finish();
    expect(c.error).toBeUndefined();
    expect(Date.now() - began).toBeGreaterThan(9_000);
    expect(Date.now() - began).toBeLessThan(12_000);
    expect((await terminal.getSession({ sessionId: id })).session?.attachedClients).toBe(0);
    await terminal.closeSession({ sessionId: id, force: true });
  }, 20_000);
});

describe("the browser form", () => {
  it("streams output over HTTP/1.1 and applies numbered writes in order, once", async () => {
    const browser = await t.client(TerminalService, { protocol: "connect-h1" });
    const id = newId();
    await browser.createSession({ spec: { sessionId: id, command: ["bash", "-c", "stty raw -echo; exec cat"] } });
    const abort = new AbortController();
    let text = "";
    const kinds: string[] = [];
    const reading = (async () => {
      for await (const res of browser.streamOutput({ sessionId: id, fromOffset: 0n }, { signal: abort.signal })) {
        kinds.push(res.event.case ?? "");
        if (res.event.case === "output") text += Buffer.from(res.event.value.data).toString();
      }
    })().catch(() => {});
    const write = (seq: bigint, data: string) =>
      browser.writeInput({ sessionId: id, clientId: "tab-1", seq, data: new TextEncoder().encode(data) });
    const third = write(3n, "C");
    const second = write(2n, "B");
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(text).toBe("");
    // Write 1 unblocks 2 and 3, so the runner then expects 4.
    expect((await write(1n, "A")).nextSeq).toBe(4n);
    expect((await second).nextSeq).toBe(3n);
    expect((await third).nextSeq).toBe(4n);
    expect((await write(2n, "B")).nextSeq).toBe(4n);
    await write(4n, "D");
    const deadline = Date.now() + 10_000;
    while (!text.includes("ABCD") && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(text).toBe("ABCD");
    expect(kinds[0]).toBe("attached");
    const { session } = await browser.resizeSession({ sessionId: id, cols: 90, rows: 20 });
    expect(session?.cols).toBe(90);
    await browser.closeSession({ sessionId: id, signal: Signal.TERM });
    await reading;
    expect(kinds).toContain("exit");
    abort.abort();
  });

  it("fails a write whose predecessor never arrives with ABORTED, unapplied", { timeout: 20_000 }, async () => {
    const id = newId();
    await terminal.createSession({ spec: { sessionId: id, command: ["sleep", "30"] } });
    const started = Date.now();
    await expect(
      terminal.writeInput({ sessionId: id, clientId: "tab-2", seq: 2n, data: new Uint8Array([65]) }),
    ).rejects.toMatchObject({ code: Code.Aborted });
    expect(Date.now() - started).toBeGreaterThanOrEqual(9_000);
    await terminal.closeSession({ sessionId: id, force: true });
  });
});

describe("sessions", () => {
  it("lists with pagination and closes with a signal", async () => {
    const ids = [newId(), newId(), newId()];
    for (const id of ids)
      await terminal.createSession({ spec: { sessionId: id, command: ["sleep", "30"], label: `L ${id}` } });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await terminal.listSessions({ pageSize: 2, pageToken });
      expect(page.sessions.length).toBeLessThanOrEqual(2);
      seen.push(...page.sessions.map((s) => s.id));
      pageToken = page.nextPageToken;
    } while (pageToken);
    for (const id of ids) expect(seen).toContain(id);
    expect(new Set(seen).size).toBe(seen.length);
    const closed = await terminal.closeSession({ sessionId: ids[0] as string, signal: Signal.TERM });
    expect(closed.session?.exit?.signal).toBe("SIGTERM");
    await expect(terminal.getSession({ sessionId: ids[0] as string })).rejects.toMatchObject({ code: Code.NotFound });
    for (const id of ids.slice(1)) await terminal.closeSession({ sessionId: id, force: true });
  });

  it("says why a session ended: exited when its program ends by itself, closed after CloseSession", async () => {
    const exitsId = newId();
    const exits = new AttachClient(terminal, {
      target: { case: "create", value: { sessionId: exitsId, command: ["bash", "-c", "sleep 0.2; exit 3"] } } as never,
    });
    const closedId = newId();
    const closed = new AttachClient(terminal, {
      target: { case: "create", value: { sessionId: closedId, command: ["sleep", "30"] } } as never,
    });
    await closed.until((x) => x.of("attached").length === 1, "attached");
    await terminal.closeSession({ sessionId: closedId });
    for (const c of [exits, closed]) await c.until((x) => x.of("exit").length === 1, "exit");
    expect(exits.of("exit")[0]?.status?.exitCode).toBe(3);
    expect(exits.of("exit")[0]?.reason).toBe("exited");
    expect(closed.of("exit")[0]?.reason).toBe("closed");
    await terminal.closeSession({ sessionId: exitsId });
  });

  it("gives the screen as text without trailing spaces, those a program wrote included", async () => {
    const id = newId();
    await terminal.createSession({
      spec: { sessionId: id, command: ["bash", "-c", "printf 'a  b   \\r\\n     \\r\\nend'; sleep 30"] },
    });
    let lines: string[] = [];
    const deadline = Date.now() + 10_000;
    while (!lines[2]?.startsWith("end") && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      lines = (await terminal.getScreen({ sessionId: id })).lines;
    }
    expect(lines.slice(0, 3)).toEqual(["a  b", "", "end"]);
    await terminal.closeSession({ sessionId: id, force: true });
  });

  it("ends a session left without a client for its detached lifetime", async () => {
    const id = newId();
    const { session } = await terminal.createSession({
      spec: { sessionId: id, command: ["sleep", "30"], detachedLifetimeMs: 1_000 },
    });
    expect(session?.expiresAt).toBeDefined();
    const deadline = Date.now() + 15_000;
    let state = SessionState.RUNNING;
    while (state === SessionState.RUNNING && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      state = (await terminal.getSession({ sessionId: id })).session?.state ?? state;
    }
    const after = (await terminal.getSession({ sessionId: id })).session;
    expect(after?.state).toBe(SessionState.EXITED);
    expect(after?.exit?.signal).toBe("SIGHUP");
  });

  it("keeps a session alive while a client is attached", async () => {
    const id = newId();
    const c = new AttachClient(terminal, {
      target: {
        case: "create",
        value: { sessionId: id, command: ["sleep", "30"], detachedLifetimeMs: 1_000 },
      } as never,
    });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect((await terminal.getSession({ sessionId: id })).session?.state).toBe(SessionState.RUNNING);
    await c.disconnect();
    await terminal.closeSession({ sessionId: id, force: true });
  });
});
