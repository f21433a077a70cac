import { createClient } from "@connectrpc/connect";
import { type Repl, ReplService, ReplState, ReplStopReason } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";
import { runnerTransport } from "./support/runner-access.js";

const idleTimeoutMs = 1_500;
let core: CoreProcess;

beforeAll(async () => {
  core = await startCoreProcess(["--idle-timeout-ms", String(idleTimeoutMs), "--idle-check-interval-ms", "200"]);
});
afterAll(async () => {
  await core?.stop();
  await core?.cleanup();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("the idle policy, with real runners", () => {
  it("keeps a repl whose terminal runs a quiet command with no client past its idle timeout, and stops one whose terminal sits at its prompt", async () => {
    const repls = core.client(ReplService, await core.devApiKey());
    const get = async (replId: string): Promise<Repl | undefined> =>
      (await repls.getRepl({ repl: { case: "replId", value: replId } })).repl;

    /** A started repl with one terminal session (the default shell) that no client ever attaches to. */
    const withTerminal = async (name: string, input?: string) => {
      const replId = (await repls.createRepl({ name, templateName: "blank" })).repl?.id ?? "";
      const { access } = await repls.startRepl({ replId });
      const terminal = createClient(TerminalService, runnerTransport(access));
      const { session } = await terminal.createSession({ spec: { sessionId: "main" } });
      if (input) await terminal.writeInput({ sessionId: session?.id ?? "", data: Buffer.from(input) });
      return replId;
    };
    // `sleep 600` stands for a long build that prints nothing.
    const build = await withTerminal("quiet-build", "sleep 600\r");
    const prompt = await withTerminal("idle-prompt");

    const deadline = Date.now() + 20_000;
    while ((await get(prompt))?.state !== ReplState.STOPPED && Date.now() < deadline) await sleep(200);
    expect(await get(prompt)).toMatchObject({ state: ReplState.STOPPED, stopReason: ReplStopReason.IDLE });

    // Twice the idle timeout later, the repl with the sleep in its terminal still runs.
    await sleep(2 * idleTimeoutMs);
    expect((await get(build))?.state).toBe(ReplState.RUNNING);
  });
});
