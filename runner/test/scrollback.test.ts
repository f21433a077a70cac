import { describe, expect, it } from "vitest";
import { InputSequencer } from "../src/terminal/input-order.js";
import { Scrollback } from "../src/terminal/scrollback.js";

/** A deterministic byte source: byte N of the stream is N mod 251. */
function bytes(from: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (from + i) % 251);
}

describe("Scrollback", () => {
  it("keeps the newest `capacity` bytes at their absolute offsets, across wrap-arounds", () => {
    const capacity = 1000;
    const ring = new Scrollback(capacity);
    let written = 0;
    let seed = 7;
    for (let step = 0; step < 500; step++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const length = seed % 1500; // sometimes larger than the whole buffer
      ring.append(bytes(written, length));
      written += length;
      expect(ring.end).toBe(written);
      expect(ring.start).toBe(Math.max(0, written - capacity));
      const from = ring.start + (seed % (ring.end - ring.start + 1));
      const max = seed % 700;
      expect(ring.read(from, max)).toEqual(bytes(from, Math.min(max, written - from)));
    }
  });

  it("refuses offsets that are gone or not written yet", () => {
    const ring = new Scrollback(10);
    ring.append(bytes(0, 25));
    expect(() => ring.read(14, 1)).toThrow(RangeError);
    expect(() => ring.read(26, 1)).toThrow(RangeError);
    expect(ring.read(25, 5)).toEqual(new Uint8Array(0));
  });
});

describe("InputSequencer", () => {
  it("applies each client's writes in seq order, exactly once, whatever the arrival order", async () => {
    const applied: string[] = [];
    const sequencer = new InputSequencer((data) => applied.push(Buffer.from(data).toString()), {
      waitMs: 1_000,
      maxClients: 8,
    });
    const write = (client: string, seq: bigint, text: string) => sequencer.write(client, seq, Buffer.from(text));
    const results = await Promise.all([
      write("a", 3n, "a3"),
      write("b", 2n, "b2"),
      write("a", 1n, "a1"),
      write("b", 1n, "b1"),
      write("a", 2n, "a2"),
      write("a", 2n, "a2-again"),
    ]);
    expect(applied.filter((x) => x.startsWith("a"))).toEqual(["a1", "a2", "a3"]);
    expect(applied.filter((x) => x.startsWith("b"))).toEqual(["b1", "b2"]);
    expect(results[0]).toBe(4n);
    expect(await write("a", 1n, "a1-retry")).toBe(4n);
    expect(applied).not.toContain("a1-retry");
  });

  it("fails a write whose predecessor never comes, without applying it", async () => {
    const applied: string[] = [];
    const sequencer = new InputSequencer((data) => applied.push(Buffer.from(data).toString()), {
      waitMs: 50,
      maxClients: 8,
    });
    await expect(sequencer.write("c", 2n, Buffer.from("late"))).rejects.toMatchObject({ code: 10 });
    expect(applied).toEqual([]);
  });

  it("lets a client settle a seq it is unsure of with an empty write: a repeat if applied, a no-op if not", async () => {
    const applied: string[] = [];
    const sequencer = new InputSequencer((data) => applied.push(Buffer.from(data).toString()), {
      waitMs: 50,
      maxClients: 8,
    });
    // Seq 1 was applied (its answer lost), seq 2 never arrived: both are settled, and seq 3 goes on at once.
    await sequencer.write("d", 1n, Buffer.from("one"));
    expect(await sequencer.write("d", 1n, new Uint8Array(0))).toBe(2n);
    expect(await sequencer.write("d", 2n, new Uint8Array(0))).toBe(3n);
    expect(await sequencer.write("d", 3n, Buffer.from("three"))).toBe(4n);
    // The write that never arrived comes late: a repeat, not applied out of order.
    expect(await sequencer.write("d", 2n, Buffer.from("two"))).toBe(4n);
    expect(applied).toEqual(["one", "", "three"]);
  });
});
