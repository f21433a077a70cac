/**
 * The page `browser.test.ts` opens in Chromium to test terminal input through the SDK's browser entry: a
 * write larger than the server takes, a write whose request fails, one whose answer is lost, the writes
 * after them, and a call to a port where nothing listens. It leaves what it saw in
 * `globalThis.__devexInputResult`; core's URL, the API key and the closed port come in the URL fragment.
 */
import { Code, ConnectError, Devex, type DevexOptions } from "@devex/sdk";

/** How one write went: its outcome and how long it took. */
export interface WriteOutcome {
  label: string;
  outcome: "resolved" | "rejected";
  error?: string;
  ms: number;
}

/** What the page reports back to the test. */
export interface BrowserInputResult {
  ok: boolean;
  error?: string;
  writes?: WriteOutcome[];
  /** What the program received, against what was written. */
  received?: { sizeBytes: number; expectedBytes: number; identical: boolean; tail: string };
  /** How a call to a closed port failed. */
  refused?: { name: string; code: string };
}

const page = globalThis as unknown as { location: { hash: string }; __devexInputResult?: BrowserInputResult };
const encoder = new TextEncoder();

/** WriteInput calls to fail: before the request is sent, or after the runner answered (the answer is lost). */
const faults = { failBeforeSending: 0, loseAnswer: 0 };
const faulty: NonNullable<DevexOptions["interceptors"]>[number] = (next) => async (req) => {
  if (req.method.name === "WriteInput" && faults.failBeforeSending > 0) {
    faults.failBeforeSending--;
    throw new ConnectError("the request did not get through (test)", Code.Unavailable);
  }
  const res = await next(req);
  if (req.method.name === "WriteInput" && faults.loseAnswer > 0) {
    faults.loseAnswer--;
    throw new ConnectError("the answer was lost (test)", Code.Unavailable);
  }
  return res;
};

async function timed(label: string, write: () => Promise<void>): Promise<WriteOutcome> {
  const started = performance.now();
  try {
    await write();
    return { label, outcome: "resolved", ms: Math.round(performance.now() - started) };
  } catch (error) {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return { label, outcome: "rejected", error: message, ms: Math.round(performance.now() - started) };
  }
}

async function until(predicate: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
}

async function run(): Promise<BrowserInputResult> {
  const params = new URLSearchParams(page.location.hash.slice(1));
  const baseUrl = params.get("baseUrl") ?? "";
  const apiKey = params.get("apiKey") ?? "";
  const refusedError = await new Devex({ apiKey, baseUrl: `http://127.0.0.1:${params.get("closedPort")}` }).templates
    .list()
    .then(
      () => undefined,
      (error: unknown) => error as { name: string; code: string },
    );

  const devex = new Devex({ apiKey, baseUrl, interceptors: [faulty] });
  const created = await devex.repls.create({ name: params.get("replName") ?? "browser-input", template: "blank" });
  const repl = await created.start();
  let output = "";
  const terminal = await repl.terminal.create({
    // Raw and without echo: the program gets the bytes as written and copies them into the file.
    command: ["sh", "-c", "stty raw -echo && echo READY && exec cat > input.bin"],
    onData: (data) => {
      output += new TextDecoder().decode(data);
    },
  });
  await until(() => output.includes("READY"), 10_000);

  const big = new Uint8Array(1024 * 1024 + 16);
  for (let i = 0; i < big.length; i++) big[i] = (i * 13 + (i >> 11)) & 0xff;
  const writes: WriteOutcome[] = [];
  writes.push(await timed("over-size", () => terminal.write(big)));
  writes.push(await timed("after over-size", () => terminal.write("a|")));
  faults.failBeforeSending = 1;
  writes.push(await timed("request failed", () => terminal.write("b|")));
  faults.loseAnswer = 1;
  writes.push(await timed("answer lost", () => terminal.write("c|")));
  writes.push(await timed("after the failures", () => terminal.write("d|")));

  const tail = encoder.encode("a|b|c|d|");
  const expected = new Uint8Array(big.length + tail.length);
  expected.set(big);
  expected.set(tail, big.length);
  let got: Uint8Array = new Uint8Array(0);
  await until(async () => {
    got = (await repl.fs.exists("input.bin")) ? await repl.fs.read("input.bin") : got;
    return got.length >= expected.length;
  }, 5_000);
  const identical = got.length === expected.length && got.every((byte, i) => byte === expected[i]);
  const gotTail = new TextDecoder().decode(got.subarray(Math.min(got.length, big.length)));

  await terminal.kill();
  await repl.stop();
  await devex.repls.delete(repl.id);
  return {
    ok: true,
    writes,
    received: { sizeBytes: got.length, expectedBytes: expected.length, identical, tail: gotTail },
    refused: { name: refusedError?.name ?? "none", code: refusedError?.code ?? "none" },
  };
}

run().then(
  (result) => {
    page.__devexInputResult = result;
  },
  (error: unknown) => {
    page.__devexInputResult = {
      ok: false,
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
    };
  },
);
