import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { FilesystemService, type WatchResponse } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestRunner, type TestRunner } from "./harness.js";

const maxWatches = 4;
let runner: TestRunner;
let client: Client<typeof FilesystemService>;

beforeAll(async () => {
  runner = await startTestRunner([`--max-watches=${maxWatches}`]);
  client = await runner.client(FilesystemService);
  for (let i = 0; i < 20; i++) mkdirSync(join(runner.workspace, "tree", `d${i}`, "sub"), { recursive: true });
});
afterAll(async () => {
  await runner?.close();
});

/** A recursive Watch of `tree` read in the background: its first message, or the error it ended with. */
function openWatch() {
  const abort = new AbortController();
  const first = (async (): Promise<WatchResponse | ConnectError> => {
    try {
      for await (const message of client.watch({ path: "tree", recursive: true }, { signal: abort.signal })) {
        return message;
      }
      return new ConnectError("the watch ended without a message", Code.Unknown);
    } catch (error) {
      return ConnectError.from(error);
    }
  })();
  return { first, close: () => abort.abort() };
}

describe("Watch streams per repl", () => {
  it("are bounded: past --max-watches a watch is refused with RESOURCE_EXHAUSTED naming the limit, and a slot comes back when one ends", async () => {
    // One more than allowed, all at once: slots are taken when a call starts, not once its tree is indexed.
    const open = Array.from({ length: maxWatches + 1 }, () => openWatch());
    const firsts = await Promise.all(open.map((watch) => watch.first));
    const refused = firsts.filter((first): first is ConnectError => first instanceof ConnectError);
    expect(firsts.filter((first) => !(first instanceof ConnectError) && first.kind.case === "started")).toHaveLength(
      maxWatches,
    );
    expect(refused).toHaveLength(1);
    expect(refused[0]?.code).toBe(Code.ResourceExhausted);
    expect(refused[0]?.rawMessage).toContain(`${maxWatches} open at once`);

    const startedOne = open.find((_, i) => !(firsts[i] instanceof ConnectError));
    startedOne?.close();
    await expect
      .poll(async () => {
        const again = openWatch();
        const first = await again.first;
        again.close();
        return first instanceof ConnectError ? first.code : first.kind.case;
      })
      .toBe("started");
    for (const watch of open) watch.close();
  });
});
