import { describe, expect, it } from "vitest";
import { FailedPreconditionError, UnavailableError } from "../src/errors.js";
import { SequencedInput } from "../src/internal/sequenced-input.js";

const text = (data: Uint8Array) => new TextDecoder().decode(data);
const bytes = (value: string) => new TextEncoder().encode(value);

/**
 * A runner's side of WriteInput for one client, as the proto describes it: seqs applied in order, each once;
 * `fail` decides, per call, to fail it before it is applied or after (the answer lost).
 */
function fakeRunner(
  fail: (seq: bigint, data: string, call: number) => "before" | "after" | Error | undefined = () => undefined,
) {
  const runner = { applied: [] as string[], calls: [] as [bigint, string][], next: 1n };
  const send = async (data: Uint8Array, seq: bigint) => {
    runner.calls.push([seq, text(data)]);
    await new Promise((resolve) => setTimeout(resolve, 1));
    const fault = fail(seq, text(data), runner.calls.length);
    if (fault instanceof Error) throw fault;
    if (fault === "before") throw new UnavailableError("no connection");
    if (seq > runner.next) throw new Error(`gap: seq ${seq} before ${runner.next}`);
    if (seq === runner.next) {
      runner.applied.push(text(data));
      runner.next++;
    }
    if (fault === "after") throw new UnavailableError("answer lost");
  };
  return { runner, send };
}

const options = { maxChunkBytes: 4, retryTimeoutMs: 200, signal: new AbortController().signal };

describe("SequencedInput", () => {
  it("splits writes into chunks of at most maxChunkBytes and joins the writes made meanwhile", async () => {
    const { runner, send } = fakeRunner();
    const input = new SequencedInput(send, options);
    await Promise.all([input.write(bytes("abcdefghij")), input.write(bytes("k")), input.write(bytes("l"))]);
    expect(runner.calls).toEqual([
      [1n, "abcd"],
      [2n, "efgh"],
      [3n, "ijkl"],
    ]);
  });

  it("sends a chunk again with its seq after a failure that may pass: applied once", async () => {
    // Seq 2 is applied but its answer is lost, then its resend does not get through, then the next one does.
    const { runner, send } = fakeRunner((_seq, _data, call) =>
      call === 2 ? "after" : call === 3 ? "before" : undefined,
    );
    const input = new SequencedInput(send, options);
    await input.write(bytes("one"));
    await input.write(bytes("two"));
    await input.write(bytes("six"));
    expect(runner.calls.map(([seq]) => seq)).toEqual([1n, 2n, 2n, 2n, 3n]);
    expect(runner.applied).toEqual(["one", "two", "six"]);
  });

  it("rejects a write that failed for good, and settles its seq so that the writes after it go on", async () => {
    const { runner, send } = fakeRunner((_seq, data, call) =>
      call === 2 ? new FailedPreconditionError("refused") : data === "lost" ? "before" : undefined,
    );
    const input = new SequencedInput(send, options);
    await input.write(bytes("one"));
    await expect(input.write(bytes("two"))).rejects.toBeInstanceOf(FailedPreconditionError);
    await input.write(bytes("abc"));
    // Seq 4 never gets through within retryTimeoutMs: rejected as not confirmed.
    await expect(input.write(bytes("lost"))).rejects.toBeInstanceOf(UnavailableError);
    await input.write(bytes("end"));
    expect(runner.applied).toEqual(["one", "", "abc", "", "end"]);
    expect(runner.calls.filter(([, data]) => data === "")).toEqual([
      [2n, ""],
      [4n, ""],
    ]);
    await input.settled();
  });
});
