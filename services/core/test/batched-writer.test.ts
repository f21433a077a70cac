import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchedWriter } from "../src/workspaces/batched-writer.js";

/** A file handle in memory: what writev received, at most `maxWrite` bytes per call, and a datasync the test settles. */
class FakeHandle {
  readonly written: number[] = [];
  writevCalls = 0;
  datasyncCalls = 0;
  pendingSyncs: PromiseWithResolvers<void>[] = [];

  constructor(private readonly maxWrite = Number.POSITIVE_INFINITY) {}

  async writev(buffers: Uint8Array[]) {
    this.writevCalls++;
    let taken = 0;
    for (const buffer of buffers) {
      for (const byte of buffer) {
        if (taken === this.maxWrite) return { bytesWritten: taken, buffers };
        this.written.push(byte);
        taken++;
      }
    }
    return { bytesWritten: taken, buffers };
  }

  datasync(): Promise<void> {
    this.datasyncCalls++;
    const sync = Promise.withResolvers<void>();
    this.pendingSyncs.push(sync);
    return sync.promise;
  }
}

/** Chunks of odd sizes (empty ones too) whose bytes count up from 0, mod 251. */
function chunks(sizes: number[]): Uint8Array[] {
  let next = 0;
  return sizes.map((size) => Uint8Array.from({ length: size }, () => next++ % 251));
}

const expectedBytes = (sizes: number[]) => Array.from({ length: sizes.reduce((a, b) => a + b, 0) }, (_, i) => i % 251);

describe("BatchedWriter", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "devex-batched-writer-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("writes every byte in order to a real file with far fewer calls than chunks", async () => {
    const sizes = Array.from({ length: 200 }, (_, i) => (i * 7919) % 9000);
    const handle = await open(join(dir, "real"), "w");
    let calls = 0;
    const counting = {
      writev: (buffers: Uint8Array[]) => {
        calls++;
        return handle.writev(buffers);
      },
      datasync: () => handle.datasync(),
    };
    const writer = new BatchedWriter(counting, { batchBytes: 64 * 1024, syncEveryBytes: 256 * 1024 });
    for (const chunk of chunks(sizes)) await writer.write(chunk);
    await writer.finish();
    await handle.close();
    expect([...(await readFile(join(dir, "real")))]).toEqual(expectedBytes(sizes));
    expect(calls).toBeGreaterThan(1);
    expect(calls).toBeLessThan(sizes.length / 4);
  });

  it("goes on after a short write with the bytes that were not written", async () => {
    const sizes = [3000, 1, 0, 4500, 2222];
    const handle = new FakeHandle(1000);
    const writer = new BatchedWriter(handle, { batchBytes: 4096 });
    for (const chunk of chunks(sizes)) await writer.write(chunk);
    await writer.finish();
    expect(handle.written).toEqual(expectedBytes(sizes));
    expect(handle.writevCalls).toBeGreaterThanOrEqual(10);
  });

  it("never hands writev more than 256 buffers", async () => {
    let most = 0;
    const handle = new FakeHandle();
    const writev = handle.writev.bind(handle);
    handle.writev = async (buffers: Uint8Array[]) => {
      most = Math.max(most, buffers.length);
      return writev(buffers);
    };
    const writer = new BatchedWriter(handle);
    const sizes = Array.from({ length: 1000 }, () => 1);
    for (const chunk of chunks(sizes)) await writer.write(chunk);
    await writer.finish();
    expect(handle.written).toEqual(expectedBytes(sizes));
    expect(most).toBe(256);
  });

  it("flushes in the background while writing, one flush at a time, and waits for it at the end", async () => {
    const handle = new FakeHandle();
    const writer = new BatchedWriter(handle, { batchBytes: 100, syncEveryBytes: 300 });
    for (const chunk of chunks(Array(10).fill(100))) await writer.write(chunk);
    // The first flush started at 300 bytes and is still running: no second one began.
    expect(handle.datasyncCalls).toBe(1);
    let finished = false;
    const finishing = writer.finish().then(() => {
      finished = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(finished).toBe(false);
    handle.pendingSyncs[0]?.resolve();
    await finishing;
    expect(handle.written).toHaveLength(1000);
  });

  it("reports a failed background flush at the next write and at finish: the final fsync would not", async () => {
    const failure = Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
    for (const next of ["write", "finish"] as const) {
      const handle = new FakeHandle();
      const writer = new BatchedWriter(handle, { batchBytes: 100, syncEveryBytes: 200 });
      for (const chunk of chunks(Array(3).fill(100))) await writer.write(chunk);
      expect(handle.datasyncCalls).toBe(1);
      handle.pendingSyncs[0]?.reject(failure);
      await new Promise((resolve) => setImmediate(resolve));
      const after = next === "write" ? writer.write(new Uint8Array(10)) : writer.finish();
      await expect(after).rejects.toBe(failure);
      expect(handle.written).toHaveLength(300);
    }
  });
});
