import { createHash, randomBytes } from "node:crypto";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AlreadyExistsError,
  CancelledError,
  DataLossError,
  Devex,
  type FsEvent,
  NotFoundError,
  type Repl,
} from "../src/index.js";
import { type LiveCore, startLiveCore, uniqueName } from "./support/live.js";

/** Runner tokens live 10 s here (the least core allows), so the test of their refresh is quick. */
const tokenTtlMs = 10_000;

let live: LiveCore;
let repl: Repl;
let startedAt: number;

// What the test interceptor sees and does: it runs after the SDK has set the runner token.
const seen = { getReplAccess: 0, attach: 0, runnerTokens: new Set<string>() };
let corruptNextRunnerToken = false;
/** Makes the next Download arrive with one bit flipped. */
let flipNextDownload = false;
/** Attach streams to cut: each number is how many more messages the current stream gets before it drops. */
const attachDrops: number[] = [];

const testInterceptor: Interceptor = (next) => async (req) => {
  if (req.method.name === "GetReplAccess") seen.getReplAccess++;
  const auth = req.header.get("authorization");
  if (req.service.typeName.startsWith("devex.runner.") && auth) {
    seen.runnerTokens.add(auth);
    if (corruptNextRunnerToken) {
      corruptNextRunnerToken = false;
      req.header.set("authorization", "Bearer not-a-valid-token");
    }
  }
  if (req.method.name === "Attach") seen.attach++;
  const res = await next(req);
  if (res.stream && req.method.name === "Download" && flipNextDownload) {
    flipNextDownload = false;
    const original = res.message;
    // One bit of the first chunk flips in transit.
    async function* flipped() {
      let first = true;
      for await (const message of original) {
        const value = message as { kind?: { case?: string; value?: unknown } };
        if (first && value.kind?.case === "chunk" && value.kind.value instanceof Uint8Array) {
          first = false;
          value.kind.value[0] = (value.kind.value[0] ?? 0) ^ 1;
        }
        yield message;
      }
    }
    return { ...res, message: flipped() };
  }
  if (!res.stream || req.method.name !== "Attach") return res;
  const messages = res.message;
  // Once told to, the connection drops in the middle of the stream, as a network failure would end it.
  async function* dropping() {
    for await (const message of messages) {
      yield message;
      const remaining = attachDrops[0];
      if (remaining === undefined) continue;
      attachDrops[0] = remaining - 1;
      if (remaining <= 1) {
        attachDrops.shift();
        throw new ConnectError("connection dropped (test)", Code.Unavailable);
      }
    }
  }
  return { ...res, message: dropping() };
};

beforeAll(async () => {
  live = await startLiveCore(["--runner-token-ttl-ms", String(tokenTtlMs)]);
  const devex = new Devex({ baseUrl: live.core.url, apiKey: live.apiKey, interceptors: [testInterceptor] });
  repl = await (await devex.repls.create({ name: uniqueName("sandbox"), template: "blank" })).start();
  startedAt = Date.now();
});
afterAll(async () => {
  await live?.close();
});

const text = (data: Uint8Array) => new TextDecoder().decode(data);

/** Polls until the predicate holds. */
async function until(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("fs", () => {
  it("writes, reads, lists, stats, moves, copies and removes", async () => {
    const bytes = new Uint8Array([0, 1, 2, 255]);
    const written = await repl.fs.write("data/bytes.bin", bytes, { createParents: true });
    expect(written).toMatchObject({ path: "data/bytes.bin", type: "file", sizeBytes: 4 });
    expect(await repl.fs.read("data/bytes.bin")).toEqual(bytes);
    expect(await repl.fs.read("data/bytes.bin", { offset: 1, length: 2 })).toEqual(new Uint8Array([1, 2]));
    await repl.fs.write("data/hello.txt", "héllo");
    expect(await repl.fs.readText("data/hello.txt")).toBe("héllo");

    await repl.fs.mkdir("data/sub/deeper", { parents: true });
    expect((await repl.fs.list("data")).map((e) => [e.name, e.type])).toEqual([
      ["bytes.bin", "file"],
      ["hello.txt", "file"],
      ["sub", "directory"],
    ]);
    expect((await repl.fs.list("data", { depth: 2 })).map((e) => e.path)).toContain("data/sub/deeper");
    const stat = await repl.fs.stat("data/hello.txt");
    expect(stat).toMatchObject({ sizeBytes: 6, mode: 0o644 });
    expect(stat.modifiedAt).toBeInstanceOf(Date);

    await repl.fs.copy("data/hello.txt", "data/copy.txt");
    await expect(repl.fs.copy("data/hello.txt", "data/copy.txt")).rejects.toBeInstanceOf(AlreadyExistsError);
    await repl.fs.move("data/copy.txt", "data/sub/moved.txt");
    expect(await repl.fs.exists("data/copy.txt")).toBe(false);
    expect(await repl.fs.readText("data/sub/moved.txt")).toBe("héllo");

    await repl.fs.remove("data", { recursive: true });
    expect(await repl.fs.exists("data")).toBe(false);
    await expect(repl.fs.stat("data")).rejects.toBeInstanceOf(NotFoundError);
  });

  it("watches: receives events, and stops when the loop breaks or the signal aborts", async () => {
    await repl.fs.mkdir("watched");
    const events: FsEvent[] = [];
    const iterator = repl.fs.watch("watched", { recursive: true });
    const byBreak = (async () => {
      for await (const event of iterator) {
        events.push(event);
        if (event.path === "watched/b.txt") break;
      }
    })();
    // The watch is in place once its stream is open: write until it reports, rather than guess a delay.
    const writer = setInterval(() => void repl.fs.write("watched/a.txt", "a").catch(() => {}), 100);
    await until(() => events.length > 0, "a watch event").finally(() => clearInterval(writer));
    expect(events[0]).toMatchObject({ path: "watched/a.txt", isDirectory: false });
    await repl.fs.write("watched/b.txt", "b");
    await byBreak;
    expect(events.map((e) => e.path)).toContain("watched/b.txt");

    const controller = new AbortController();
    const byAbort = (async () => {
      for await (const _ of repl.fs.watch("watched", { signal: controller.signal })) {
        // Nothing changes; only the abort ends this loop.
      }
      return "ended";
    })();
    setTimeout(() => controller.abort(), 200);
    expect(await byAbort).toBe("ended");
  });

  it("uploads and downloads a multi-MiB file with progress and identical bytes", async () => {
    const content = randomBytes(6 * 1024 * 1024 + 123);
    const uploadProgress: number[] = [];
    const entry = await repl.fs.upload("big/blob.bin", content, {
      createParents: true,
      onProgress: (bytes, total) => {
        expect(total).toBe(content.length);
        uploadProgress.push(bytes);
      },
    });
    expect(entry.sizeBytes).toBe(content.length);
    expect(uploadProgress.length).toBeGreaterThan(1);
    expect(uploadProgress.at(-1)).toBe(content.length);

    const downloadProgress: number[] = [];
    const hash = createHash("sha256");
    let received = 0;
    for await (const chunk of repl.fs.download("big/blob.bin", {
      onProgress: (bytes, total) => {
        expect(total).toBe(content.length);
        downloadProgress.push(bytes);
      },
    })) {
      hash.update(chunk);
      received += chunk.length;
    }
    expect(received).toBe(content.length);
    expect(hash.digest("hex")).toBe(createHash("sha256").update(content).digest("hex"));
    expect(downloadProgress.length).toBeGreaterThan(1);

    // A download damaged in transit is refused at its end: the runner's checksum does not match.
    flipNextDownload = true;
    const damaged = (async () => {
      for await (const _chunk of repl.fs.download("big/blob.bin"));
    })();
    await expect(damaged).rejects.toBeInstanceOf(DataLossError);

    // An async iterable source (size unknown up front) works too.
    async function* pieces() {
      yield content.subarray(0, 3_000_000);
      yield content.subarray(3_000_000);
    }
    await repl.fs.upload("big/streamed.bin", pieces());
    expect((await repl.fs.stat("big/streamed.bin")).sizeBytes).toBe(content.length);
    await repl.fs.remove("big", { recursive: true });
  });
});

describe("commands", () => {
  it("runs a command: stdout, stderr, exit code", async () => {
    const result = await repl.commands.run("echo out; echo err >&2; exit 3");
    expect(result).toMatchObject({ stdout: "out\n", stderr: "err\n", exitCode: 3, timedOut: false });
    expect((await repl.commands.run(["printf", "%s", "a b"])).stdout).toBe("a b");
  });

  it("kills a command when its timeoutMs passes", async () => {
    const started = Date.now();
    const result = await repl.commands.run("echo begun; sleep 20", { timeoutMs: 500 });
    expect(result).toMatchObject({ stdout: "begun\n", exitCode: null, signal: "SIGKILL", timedOut: true });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("starts a command with stdin and output callbacks, connects to it by tag, and waits", async () => {
    let streamed = "";
    const tag = uniqueName("cat");
    const handle = await repl.commands.start("cat", { tag, stdin: true, onStdout: (d) => (streamed += text(d)) });
    expect(handle.pid).toBeGreaterThan(0);
    await handle.sendInput("first line\n");
    await until(() => streamed.includes("first line"), "cat's echo");

    let replayed = "";
    const other = await repl.commands.connect(tag, { onStdout: (d) => (replayed += text(d)) });
    expect(other.pid).toBe(handle.pid);
    await until(() => replayed.includes("first line"), "the replay");
    expect((await repl.commands.list()).find((c) => c.pid === handle.pid)).toMatchObject({ tag, running: true });

    await handle.sendInput("second line\n");
    await handle.closeStdin();
    const result = await handle.wait();
    expect(result).toMatchObject({ exitCode: 0, stdout: "first line\nsecond line\n" });
    expect((await other.wait()).stdout).toBe("first line\nsecond line\n");
  });

  it("kills a started command, and disconnect leaves it running", async () => {
    const handle = await repl.commands.start(["sleep", "30"]);
    const watcher = await repl.commands.connect(handle.pid);
    watcher.disconnect();
    await expect(watcher.wait()).rejects.toBeInstanceOf(CancelledError);
    expect((await repl.commands.list()).find((c) => c.pid === handle.pid)?.running).toBe(true);
    await handle.kill();
    expect(await handle.wait()).toMatchObject({ exitCode: null, signal: "SIGKILL" });
  });
});

describe("terminal", () => {
  /** A terminal whose output is collected as text. */
  async function openTerminal(options: { cols?: number; rows?: number } = {}) {
    const output = { text: "" };
    const handle = await repl.terminal.create({ ...options, onData: (d) => (output.text += text(d)) });
    return { handle, output };
  }

  it("creates a terminal, receives echo output, resizes, and waits for the exit", async () => {
    const { handle, output } = await openTerminal({ cols: 100, rows: 30 });
    expect((await repl.terminal.list()).find((t) => t.id === handle.id)).toMatchObject({ cols: 100, rows: 30 });
    await handle.write("echo hi-$((6*7))\n");
    await until(() => output.text.includes("hi-42"), "the echo");
    await handle.resize(120, 40);
    await handle.write("stty size\n");
    await until(() => output.text.includes("40 120"), "the new size");
    await handle.write("exit 7\n");
    expect(await handle.wait()).toEqual({ exitCode: 7 });
    expect(handle.offset).toBeGreaterThan(0);
  });

  it("disconnects, and connect(id) replays what was missed", async () => {
    const { handle, output } = await openTerminal();
    await handle.write("echo ready\n");
    await until(() => output.text.includes("ready\r\n"), "ready");
    await handle.write("sleep 0.3; echo missed-$((1+1))\n");
    await handle.disconnect();
    const offset = handle.offset;
    await expect(handle.wait()).rejects.toBeInstanceOf(CancelledError);
    await new Promise((resolve) => setTimeout(resolve, 800));

    let replayed = "";
    const again = await repl.terminal.connect(handle.id, { fromOffset: offset, onData: (d) => (replayed += text(d)) });
    await until(() => replayed.includes("missed-2"), "the replayed output");
    expect(output.text).not.toContain("missed-2");

    let screen = "";
    const third = await repl.terminal.connect(handle.id, { onData: (d) => (screen += text(d)) });
    await until(() => screen.includes("missed-2"), "the screen snapshot");
    await third.disconnect();

    // Connecting with a size resizes the session before anything is replayed.
    const sized = await repl.terminal.connect(handle.id, { cols: 91, rows: 21 });
    expect((await repl.terminal.list()).find((session) => session.id === handle.id)).toMatchObject({
      cols: 91,
      rows: 21,
    });
    await sized.disconnect();
    await again.kill();
    expect(await again.wait()).toHaveProperty("exitCode");
  });

  it("reattaches by itself when the connection drops: every byte once, in order", async () => {
    const { handle, output } = await openTerminal();
    // The markers are quoted so that only the commands' output matches them, never the shell's
    // echo of the typed line (writes resolve once the terminal has them, maybe before stty runs).
    await handle.write("stty -echo\n");
    await handle.write('echo "st"art\n');
    await until(() => output.text.includes("start\r\n"), "start");
    const attachesBefore = seen.attach;
    // Two drops in the burst: after its first message, and again right after the first message of
    // the stream the first reattach opened. The burst comes in 20 parts with pauses between them,
    // so that it takes more messages than that however large the runner's batches (a client behind
    // gets few large ones: the runner waits for it rather than skipping).
    attachDrops.push(1, 1);
    const lines = 50_000;
    const part = lines / 20;
    await handle.write(
      `for i in $(seq 0 19); do seq $((i*${part}+1)) $((i*${part}+${part})); sleep 0.05; done; echo "do"ne\n`,
    );
    await until(() => output.text.includes("done\r\n"), "the end of the burst", 20_000);
    expect(attachDrops).toEqual([]);
    await until(() => seen.attach === attachesBefore + 2, "the second reattach");

    const numbers = output.text
      .split("\r\n")
      .filter((line) => /^\d+$/.test(line))
      .map(Number);
    expect(numbers.length).toBe(lines);
    expect(numbers.every((n, i) => n === i + 1)).toBe(true);

    // The handle still works after reattaching.
    await handle.write("exit 0\n");
    expect(await handle.wait()).toEqual({ exitCode: 0 });
  });
});

describe("runner tokens", () => {
  it("keeps working after the cached token would have expired", async () => {
    // StartRepl handed out the first token; every GetReplAccess since is a refresh.
    const [firstToken] = seen.runnerTokens;
    // The runner allows 5 s of clock skew past a token's expiry.
    const waitMs = startedAt + tokenTtlMs + 6_000 - Date.now();
    if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));

    // The first token has expired: the runner refuses it.
    const files = createClient(FilesystemService, createGrpcTransport({ baseUrl: `${live.core.replUrl}/${repl.id}/` }));
    const refused = await files.stat({ path: "." }, { headers: { authorization: firstToken ?? "" } }).then(
      () => "ok",
      (e: unknown) => ConnectError.from(e).code,
    );
    expect(refused).toBe(Code.Unauthenticated);

    await repl.fs.write("token.txt", "still works");
    expect(await repl.fs.readText("token.txt")).toBe("still works");
    expect(seen.getReplAccess).toBeGreaterThan(0);
    expect(seen.runnerTokens.size).toBeGreaterThan(1);
  });

  it("refreshes the token once after an Unauthenticated answer", async () => {
    await repl.fs.stat(".");
    const before = seen.getReplAccess;
    corruptNextRunnerToken = true;
    expect(await repl.fs.readText("token.txt")).toBe("still works");
    expect(corruptNextRunnerToken).toBe(false);
    expect(seen.getReplAccess).toBe(before + 1);
  });
});
