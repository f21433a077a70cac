import { createServer } from "node:net";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CoreProcess, startCoreProcess } from "../../services/core/test/support/core-process.js";
import { Devex, type Repl, type TerminalHandle, UnavailableError } from "../src/index.js";
import { uniqueName } from "./support/live.js";

/**
 * Terminal input through the Node SDK against a live core and runner: writes larger than the server
 * takes, writes whose answer is lost, and writes made while core is down (core is killed and started
 * again on the same ports and data directory; its runners live on).
 */

/** The server's limit on one write (WriteInputRequest.data, AttachInput.data). */
const maxWriteBytes = 1024 * 1024;

let core: CoreProcess;
/** Set while core is killed: its runners live on until a core on the same data directory stops them. */
let coreDown = false;
let coreArgs: string[];
let apiKey: string;
let repl: Repl;
/** WriteInput calls to answer with a lost response: applied by the runner, then failed on the way back. */
let loseNextAnswers = 0;

const losingInterceptor: Interceptor = (next) => async (req) => {
  const res = await next(req);
  if (req.method.name === "WriteInput" && loseNextAnswers > 0) {
    loseNextAnswers--;
    throw new ConnectError("the answer was lost (test)", Code.Unavailable);
  }
  return res;
};

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

beforeAll(async () => {
  // Fixed ports, so that a restarted core is where the SDK's cached runner endpoint points.
  coreArgs = ["--port", String(await freePort()), "--repl-port", String(await freePort())];
  core = await startCoreProcess(coreArgs);
  apiKey = await core.devApiKey();
  const devex = new Devex({ baseUrl: core.url, apiKey, interceptors: [losingInterceptor] });
  repl = await (await devex.repls.create({ name: uniqueName("input"), template: "blank" })).start();
});
afterAll(async () => {
  if (coreDown) core = await startCoreProcess(coreArgs, core.dataDir);
  await core?.stop();
  await core?.cleanup();
});

/** Polls until the predicate holds. */
async function until(predicate: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * A terminal whose program copies its raw input (no echo, no line discipline) into `file`, once it has
 * said READY: what the program received is then read back byte for byte.
 */
async function recordingTerminal(on: Repl, file: string): Promise<TerminalHandle> {
  let output = "";
  const handle = await on.terminal.create({
    command: ["sh", "-c", `stty raw -echo && echo READY && exec cat > ${file}`],
    onData: (data) => {
      output += new TextDecoder().decode(data);
    },
  });
  await until(() => output.includes("READY"), "the program to be ready");
  return handle;
}

/** Waits until `file` holds `expected.length` bytes, and returns what it holds then. */
async function received(file: string, expected: Uint8Array): Promise<Uint8Array> {
  await until(
    async () => ((await repl.fs.exists(file)) ? (await repl.fs.stat(file)).sizeBytes >= expected.length : false),
    `${expected.length} bytes in ${file}`,
  ).catch(() => {});
  return repl.fs.read(file);
}

/** Where a promise is: its outcome, or "pending". */
function track<T>(promise: Promise<T>): { state: "pending" | "resolved" | "rejected"; error?: unknown } {
  const tracked: { state: "pending" | "resolved" | "rejected"; error?: unknown } = { state: "pending" };
  promise.then(
    () => {
      tracked.state = "resolved";
    },
    (error: unknown) => {
      tracked.state = "rejected";
      tracked.error = error;
    },
  );
  return tracked;
}

const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

describe("terminal input through the Node SDK", () => {
  it("splits a write larger than the server's limit: the program receives it and the writes after it, in order", async () => {
    const handle = await recordingTerminal(repl, "big.bin");
    const big = new Uint8Array(maxWriteBytes + 16);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 10)) & 0xff;
    const first = new TextEncoder().encode("first small write|");
    const second = new TextEncoder().encode("second|");
    await Promise.all([handle.write(big), handle.write(first), handle.write(second)]);
    const expected = concat(big, first, second);
    const got = await received("big.bin", expected);
    expect(got.length).toBe(expected.length);
    expect(Buffer.compare(got, expected)).toBe(0);
    await handle.kill();
  });

  it("retries a write whose answer was lost with its sequence number: applied once", async () => {
    const handle = await recordingTerminal(repl, "lost-answer.txt");
    await handle.write("one|");
    loseNextAnswers = 1;
    await handle.write("two|");
    expect(loseNextAnswers).toBe(0);
    await handle.write("three|");
    const expected = new TextEncoder().encode("one|two|three|");
    expect(new TextDecoder().decode(await received("lost-answer.txt", expected))).toBe("one|two|three|");
    await handle.kill();
  });

  it("delivers a write made while core is down once core is back, exactly once; one that outlasts reconnectTimeoutMs rejects and wedges nothing", async () => {
    const patient = await recordingTerminal(repl, "outage.txt");
    const impatientRepl = await new Devex({ baseUrl: core.url, apiKey, reconnectTimeoutMs: 1_000 }).repls.get(repl.id);
    const impatient = await recordingTerminal(impatientRepl, "outage-impatient.txt");
    await patient.write("before|");
    await impatient.write("before|");

    // Core dies; the runner (and the sessions) live on.
    await core.stop("SIGKILL");
    coreDown = true;
    const during = patient.write("during|");
    const duringState = track(during);
    const givenUp = impatient.write("lost|").catch((error: unknown) => error);
    // The impatient handle gives up after its 1 s: the write is rejected, loudly.
    expect(await givenUp).toBeInstanceOf(UnavailableError);
    // The patient one is still waiting: neither resolved (it was not delivered) nor rejected.
    expect(duringState.state).toBe("pending");

    core = await startCoreProcess(coreArgs, core.dataDir);
    coreDown = false;
    await during;
    await patient.write("after|");
    await impatient.write("after|");

    const expected = new TextEncoder().encode("before|during|after|");
    expect(new TextDecoder().decode(await received("outage.txt", expected))).toBe("before|during|after|");
    // The rejected write was not applied, and the write after it was not held up by it.
    const impatientExpected = new TextEncoder().encode("before|after|");
    expect(new TextDecoder().decode(await received("outage-impatient.txt", impatientExpected))).toBe("before|after|");
    await patient.kill();
    await impatient.kill();
  }, 60_000);
});
