import { create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { SessionSpecSchema, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttachClient } from "../../../runner/test/attach-client.js";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";

let core: CoreProcess;
let apiKey: string;

beforeAll(async () => {
  core = await startCoreProcess();
  apiKey = await core.devApiKey();
});
afterAll(async () => {
  await core?.stop();
  await core?.cleanup();
});

/** A terminal client through core's repl origin with `token`, on a connection of its own. */
function terminalVia(endpointUrl: string, token: string): Client<typeof TerminalService> {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  return createClient(TerminalService, createGrpcTransport({ baseUrl: endpointUrl, interceptors: [auth] }));
}

/** The name of a call's outcome: `ok` or its code. */
async function outcome(call: () => Promise<unknown>): Promise<string> {
  try {
    await call();
    return "ok";
  } catch (error) {
    const ce = ConnectError.from(error);
    return `${Code[ce.code]}: ${ce.rawMessage.slice(0, 80)}`;
  }
}

describe("the repl origin under one client's flood", () => {
  it("keeps another client's Attach alive and refuses the excess with ResourceExhausted", async () => {
    const repls = core.client(ReplService, apiKey);
    const { repl } = await repls.createRepl({ name: "flood", templateName: "blank" });
    const replId = repl?.id ?? "";
    const started = await repls.startRepl({ replId });
    const endpointUrl = started.access?.endpointUrl ?? "";
    // Tokens are per second: the flooding client gets one of its own.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const flooder = (await repls.getReplAccess({ replId })).access?.token ?? "";
    expect(flooder).not.toBe(started.access?.token);

    const attach = new AttachClient(terminalVia(endpointUrl, started.access?.token ?? ""), {
      target: { case: "create", value: create(SessionSpecSchema, { cols: 80, rows: 24 }) },
    });
    await attach.until((c) => c.of("attached").length > 0, "attached");
    const { session } = await terminalVia(endpointUrl, flooder).createSession({
      spec: { command: ["bash", "-c", "cat > /dev/null"] },
    });
    const sessionId = session?.id ?? "";

    // 10 connections x 500 WriteInput calls at once, all from one client.
    const outcomes = new Map<string, number>();
    const connections = Array.from({ length: 10 }, () => terminalVia(endpointUrl, flooder));
    await Promise.all(
      connections.flatMap((terminal) =>
        Array.from({ length: 500 }, async () => {
          const result = await outcome(() => terminal.writeInput({ sessionId, data: new TextEncoder().encode("x") }));
          outcomes.set(result, (outcomes.get(result) ?? 0) + 1);
        }),
      ),
    );

    // Then 1,500 output streams from the same client, canceled at once (a runner's HTTP/2 server
    // ends a connection, with every stream on it, after 1,000 resets in a burst).
    const flood = new AbortController();
    const streaming = Array.from({ length: 1_500 }, (_, i) =>
      outcome(async () => {
        const terminal = connections[i % connections.length] as Client<typeof TerminalService>;
        for await (const _ of terminal.streamOutput({ sessionId }, { signal: flood.signal })) {
          // held open until the flood is canceled
        }
      }),
    );
    const other = terminalVia(endpointUrl, started.access?.token ?? "");
    const attachedTo = async () => (await other.getSession({ sessionId })).session?.attachedClients ?? 0;
    for (const deadline = Date.now() + 30_000; (await attachedTo()) < 256 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    flood.abort();
    const streams = await Promise.all(streaming);

    // The other client's terminal still works...
    attach.type("echo alive-$((6*7))\n");
    await attach.waitForText("alive-42", 10_000);
    expect(attach.done).toBe(false);
    expect(attach.error).toBeUndefined();
    // ...and the flood's excess was refused with ResourceExhausted, nothing else failed.
    const failures = [...outcomes.keys()].filter(
      (result) => result !== "ok" && !result.startsWith("ResourceExhausted"),
    );
    expect(failures).toEqual([]);
    expect(outcomes.get("ok")).toBeGreaterThanOrEqual(256);
    const refusedWrites = [...outcomes].filter(([result]) => result.startsWith("ResourceExhausted"));
    expect(refusedWrites.reduce((sum, [, n]) => sum + n, 0)).toBeGreaterThan(0);
    expect(streams.filter((result) => !/^(Canceled|ResourceExhausted)/.test(result))).toEqual([]);
    expect(streams.filter((result) => result.startsWith("ResourceExhausted")).length).toBeGreaterThan(0);
    await attach.disconnect();
    await repls.stopRepl({ replId });
  }, 120_000);
});
