import { randomBytes } from "node:crypto";
import type { Interceptor } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Devex, type Repl, type TerminalLag } from "../src/index.js";
import { type LiveCore, startLiveCore, uniqueName } from "./support/live.js";

let live: LiveCore;
let devex: Devex;
let repl: Repl;

beforeAll(async () => {
  live = await startLiveCore();
  devex = new Devex({ baseUrl: live.core.url, apiKey: live.apiKey });
  repl = await (await devex.repls.create({ name: uniqueName("lag"), template: "blank" })).start();
});
afterAll(async () => {
  await live?.close();
});

/** A client whose Attach streams are read by `pace`, awaited before each message after the first. */
function pacedClient(pace: () => Promise<void>): Devex {
  const paced: Interceptor = (next) => async (req) => {
    const res = await next(req);
    if (!res.stream || req.method.name !== "Attach") return res;
    const messages = res.message;
    async function* slowly() {
      let first = true;
      for await (const message of messages) {
        if (!first) await pace();
        first = false;
        yield message;
      }
    }
    return { ...res, message: slowly() };
  };
  return new Devex({ baseUrl: live.core.url, apiKey: live.apiKey, interceptors: [paced] });
}

/** What a terminal handle's callbacks received: output at its offsets, lags, and redraws. */
class Received {
  readonly lags: TerminalLag[] = [];
  /** Where this handle's output stood when each lag came. */
  readonly lagPositions: number[] = [];
  readonly redraws: Uint8Array[] = [];
  private readonly chunks: { at: number; data: Uint8Array }[] = [];
  /** The offset of the next output byte. */
  position = 0;
  private redrawCalls = 0;

  readonly onData = (data: Uint8Array) => {
    // After a lag with a snapshot come a reset and the snapshot, which are not output.
    if (this.redrawCalls > 0) {
      this.redrawCalls--;
      this.redraws.push(data);
      return;
    }
    this.chunks.push({ at: this.position, data });
    this.position += data.length;
  };

  readonly onLag = (lag: TerminalLag) => {
    this.lags.push(lag);
    this.lagPositions.push(this.position);
    this.position = lag.resumeOffset;
    if (lag.snapshot) this.redrawCalls = 2;
  };

  /** The output received, without the gaps. */
  get output(): Buffer {
    return Buffer.concat(this.chunks.map((c) => c.data));
  }

  /** Checks every chunk against `all`, the session's whole output, at the chunk's offset. */
  expectPartOf(all: Buffer): void {
    for (const { at, data } of this.chunks)
      expect(Buffer.from(data).equals(all.subarray(at, at + data.length))).toBe(true);
  }
}

/** Polls until the predicate holds. */
async function until(predicate: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe("a terminal handle slower than its program", () => {
  it("alone, receives every byte of a 4 MiB file in order and never lags: the program waits for it", async () => {
    const file = Buffer.from(
      randomBytes(3 * 1024 * 1024)
        .toString("base64")
        .replace(/(.{76})/g, "$1\n"),
    );
    await repl.fs.write("four.b64", file);
    const slow = await pacedClient(() => sleep(5)).repls.get(repl.id);
    const received = new Received();
    const handle = await slow.terminal.create({
      command: ["bash", "-c", "stty -opost -echo; printf READY; read x; cat four.b64"],
      onData: received.onData,
      onLag: received.onLag,
    });
    await until(() => received.position >= 5, "READY");
    await handle.write("\r");
    expect(await handle.wait()).toEqual({ exitCode: 0 });
    expect(received.lags).toEqual([]);
    expect(received.output.equals(Buffer.concat([Buffer.from("READY"), file]))).toBe(true);
  }, 30_000);

  it("beside a faster one, does not hold it up, and is told by onLag exactly what it skipped", async () => {
    const command = [
      "bash",
      "-c",
      "stty -echo; printf READY; read x; head -c 6000000 /dev/urandom | base64; read x; printf MORE",
    ];
    const fast = new Received();
    const fastHandle = await repl.terminal.create({ command, onData: fast.onData, onLag: fast.onLag });
    await until(() => fast.position >= 5, "READY");
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const stalledRepl = await pacedClient(() => released).repls.get(repl.id);
    const stalled = new Received();
    const stalledHandle = await stalledRepl.terminal.connect(fastHandle.id, {
      fromOffset: 0,
      onData: stalled.onData,
      onLag: stalled.onLag,
    });

    await fastHandle.write("\r");
    // base64 writes lines of 76 characters (the last one shorter), each ending in "\n", sent as "\r\n".
    const produced = 5 + 8_000_000 + 2 * Math.ceil(8_000_000 / 76);
    await until(() => fast.position === produced, "all the output, to the fast handle");
    expect(fast.lags).toEqual([]);
    expect(stalled.position).toBeLessThan(produced);

    release();
    await until(() => stalled.position === produced, "the stalled handle catching up");
    await fastHandle.write("\r");
    for (const handle of [fast, stalled]) await until(() => handle.position === produced + 4, "MORE");
    const all = fast.output;
    expect(all.subarray(-4).toString()).toBe("MORE");
    expect(stalled.output.subarray(-4).toString()).toBe("MORE");
    expect(stalled.lags.length).toBeGreaterThan(0);
    // Each lag starts where the output stood, says how much it skipped, and comes with a redraw.
    expect(stalled.lags.map((lag) => lag.fromOffset)).toEqual(stalled.lagPositions);
    for (const lag of stalled.lags)
      expect(lag).toMatchObject({ skippedBytes: lag.resumeOffset - lag.fromOffset, snapshot: true });
    expect(stalled.redraws.length).toBe(2 * stalled.lags.length);
    expect(stalled.redraws[0]).toEqual(new Uint8Array([0x1b, 0x63]));
    expect(stalled.redraws[1]?.length).toBeGreaterThan(0);
    stalled.expectPartOf(all);
    const skipped = stalled.lags.reduce((sum, lag) => sum + lag.skippedBytes, 0);
    expect(stalled.output.length + skipped).toBe(all.length);
    await stalledHandle.disconnect();
    await fastHandle.kill();
  }, 30_000);
});
