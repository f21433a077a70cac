import { afterEach, describe, expect, it, vi } from "vitest";
import { Backpressure } from "../src/terminal/backpressure.js";
import { Scrollback } from "../src/terminal/scrollback.js";

/** A scrollback of 256 KiB (pause 32 KiB behind, resume at 16 KiB) and a PTY that records whether it is read. */
function setUp(programGone = () => false) {
  const scrollback = new Scrollback(256 * 1024);
  const pty = {
    reading: true,
    pause() {
      pty.reading = false;
    },
    resume() {
      pty.reading = true;
    },
  };
  const backpressure = new Backpressure(scrollback, pty, programGone);
  const output = (bytes: number) => {
    scrollback.append(new Uint8Array(bytes));
    backpressure.onOutput();
  };
  return { scrollback, pty, backpressure, output };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("Backpressure", () => {
  it("pauses the PTY while the only client is behind, and resumes once it has caught up", () => {
    const { pty, backpressure, output } = setUp();
    output(100_000);
    expect(pty.reading).toBe(true);
    const client = backpressure.track(100_000);
    output(32 * 1024 - 1);
    expect(pty.reading).toBe(true);
    output(1);
    expect(pty.reading).toBe(false);
    client.advance(100_000 + 16 * 1024 - 1);
    expect(pty.reading).toBe(false);
    client.advance(100_000 + 16 * 1024);
    expect(pty.reading).toBe(true);
  });

  it("follows the fastest client: a stalled one beside it never pauses the PTY", () => {
    const { pty, backpressure, output } = setUp();
    backpressure.track(0);
    const fast = backpressure.track(0);
    for (let offset = 4096; offset <= 1_000_000; offset += 4096) {
      output(4096);
      fast.advance(offset);
      expect(pty.reading).toBe(true);
    }
  });

  it("resumes when the client it waits for detaches, and when the program is gone", () => {
    vi.useFakeTimers();
    let gone = false;
    const { pty, backpressure, output } = setUp(() => gone);
    const client = backpressure.track(0);
    output(40_000);
    expect(pty.reading).toBe(false);
    client.close();
    expect(pty.reading).toBe(true);

    backpressure.track(40_000);
    output(40_000);
    expect(pty.reading).toBe(false);
    gone = true;
    vi.advanceTimersByTime(100);
    expect(pty.reading).toBe(true);
    // What the program left in the buffers is read whoever is behind.
    output(100_000);
    expect(pty.reading).toBe(true);
  });
});
