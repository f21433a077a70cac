/**
 * `npm run bench:terminal`: keystroke round trip and output throughput of a terminal,
 * for five designs measured in the same run on this machine:
 *
 *   pty-alone   node-pty in this process (the ceiling: the kernel's terminal layer)
 *   ws-relay    a raw WebSocket relay, one frame per PTY chunk (the seed system's design)
 *   h2-relay    the same relay over a raw node:http2 stream (no gRPC, no Connect): what
 *               HTTP/2 itself costs against the WebSocket
 *   attach      our Attach bidirectional stream, gRPC over h2c, to a runner process
 *   browser     our browser form: StreamOutput (Connect, HTTP/1.1) plus unary WriteInput
 *
 * then, round trips only, the floor of the protocol (connect-floor): Attach served by
 * connect-node alone in its own process, echoing input without a PTY (bench/connect-echo.ts);
 * and the runner's memory, idle and with 50 idle sessions. Prints one JSON line per
 * target, then the ratios against the targets. Not a test: figures vary with the machine.
 *
 * Options (environment): BENCH_KEYSTROKES (default 1000), BENCH_MB (default 100),
 * BENCH_RUNNER_NODE_OPTIONS (the runner's Node flags; default "--max-semi-space-size=1", as
 * deployed: compare, say, "--max-semi-space-size=1 --lite-mode").
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { create } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  type AttachRequest,
  AttachRequestSchema,
  type AttachResponse,
  type StreamOutputResponse,
  TerminalService,
} from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { WideWindowSessionManager } from "@devex/kit";
import { type SpawnedService, spawnService } from "@devex/kit/testing";
import * as pty from "node-pty";
import WebSocket from "ws";
import { Channel } from "../runner/src/channel.js";

const keystrokes = Number(process.env.BENCH_KEYSTROKES ?? 1000);
const megabytes = Number(process.env.BENCH_MB ?? 100);
const echoCommand = "stty raw -echo; exec cat";

/** A terminal under test: write bytes, get output bytes through a callback. */
interface Target {
  write(data: Uint8Array): unknown;
  onData(listener: (data: Uint8Array) => void): void;
  /** Called with the size of a gap when the runner says the client fell behind (`lagged`). */
  onSkipped?(listener: (bytes: number) => void): void;
  close(): Promise<void>;
}

interface Result {
  target: string;
  rtt_p50_us: number;
  rtt_p99_us: number;
  throughput_mb_s: number;
  /** Output the client was told it fell behind on (`lagged`), not delivered. */
  skipped_bytes: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** Sends single bytes one at a time and times each until its echo comes back. */
async function roundTrips(open: (command: string) => Promise<Target>): Promise<number[]> {
  const target = await open(echoCommand);
  let waiting: ((byte: number) => void) | undefined;
  target.onData((data) => {
    for (const byte of data) waiting?.(byte);
  });
  // Warm up: the shell must be in raw mode before timing starts.
  for (let ready = false; !ready; ) {
    const echoed = new Promise<boolean>((resolve) => {
      waiting = (byte) => resolve(byte === 0x21);
      setTimeout(() => resolve(false), 200);
    });
    void target.write(new Uint8Array([0x21]));
    ready = await echoed;
  }
  await new Promise((resolve) => setTimeout(resolve, 200));
  const times: number[] = [];
  for (let i = 0; i < keystrokes; i++) {
    const byte = 0x61 + (i % 26);
    const echoed = new Promise<void>((resolve) => {
      waiting = (got) => {
        if (got === byte) resolve();
      };
    });
    const started = process.hrtime.bigint();
    void target.write(new Uint8Array([byte]));
    await echoed;
    times.push(Number(process.hrtime.bigint() - started) / 1000);
  }
  await target.close();
  return times.sort((a, b) => a - b);
}

/** Times `megabytes` of output from a trigger byte to the last byte. */
async function throughput(
  open: (command: string) => Promise<Target>,
  file: string,
  bytes: number,
): Promise<{ mbs: number; skippedBytes: number }> {
  const target = await open(`stty raw -echo; head -c 1 >/dev/null; exec cat ${file}`);
  let received = 0;
  let skipped = 0;
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    done = resolve;
  });
  const count = (n: number) => {
    received += n;
    if (received >= bytes) done();
  };
  target.onData((data) => count(data.length));
  target.onSkipped?.((n) => {
    skipped += n;
    count(n);
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const started = performance.now();
  void target.write(new Uint8Array([0x0a]));
  let timer: NodeJS.Timeout | undefined;
  const limitMs = 300_000;
  await Promise.race([
    finished,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`only ${received} of ${bytes} bytes in ${limitMs} ms`)), limitMs);
    }),
  ]);
  clearTimeout(timer);
  const seconds = (performance.now() - started) / 1000;
  await target.close();
  // Bytes the client fell behind on were not delivered to it: they do not count.
  return { mbs: (bytes - skipped) / 1024 / 1024 / seconds, skippedBytes: skipped };
}

/** The output listeners of a target: `emit` hands each chunk to every one of them. */
function listenerList() {
  const listeners: ((data: Uint8Array) => void)[] = [];
  return {
    emit: (data: Uint8Array) => {
      for (const l of listeners) l(data);
    },
    onData: (listener: (data: Uint8Array) => void) => {
      listeners.push(listener);
    },
  };
}

async function openPty(command: string): Promise<Target> {
  const term = pty.spawn("bash", ["-c", command], { cols: 120, rows: 40, encoding: null } as pty.IPtyForkOptions);
  const output = listenerList();
  term.onData((data) => output.emit(data as unknown as Buffer));
  return {
    write: (data) => term.write(Buffer.from(data)),
    onData: output.onData,
    async close() {
      term.kill("SIGKILL");
    },
  };
}

function h2Opener(port: number) {
  return async (command: string): Promise<Target> => {
    // The same receive windows as the Attach client's, so flow control holds neither back more.
    const connection = new WideWindowSessionManager(`http://127.0.0.1:${port}`, {
      streamWindowBytes: windowBytes,
      connectionWindowBytes: windowBytes,
    });
    const stream = await connection.request("POST", `/?command=${encodeURIComponent(command)}`, {}, {});
    // The relay may reset the stream as it tears the terminal down after close().
    stream.on("error", () => {});
    await once(stream, "response");
    const output = listenerList();
    stream.on("data", output.emit);
    return {
      write: (data) => stream.write(data),
      onData: output.onData,
      async close() {
        stream.close();
        connection.abort();
      },
    };
  };
}

function wsOpener(port: number) {
  return async (command: string): Promise<Target> => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/?command=${encodeURIComponent(command)}`);
    await once(socket, "open");
    const output = listenerList();
    socket.on("message", output.emit);
    return {
      write: (data) => socket.send(data),
      onData: output.onData,
      async close() {
        socket.close();
      },
    };
  };
}

/**
 * Reads a terminal event stream (Attach or StreamOutput) in the background, handing
 * output and `lagged` gaps to listeners; resolves once the stream says `attached`.
 */
async function followOutput(
  stream: AsyncIterable<AttachResponse | StreamOutputResponse>,
): Promise<Pick<Target, "onData" | "onSkipped">> {
  const output = listenerList();
  const skips: ((bytes: number) => void)[] = [];
  let attached: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    attached = resolve;
  });
  void (async () => {
    for await (const { event } of stream) {
      if (event.case === "attached") attached();
      if (event.case === "output") output.emit(event.value.data);
      if (event.case === "lagged") {
        for (const l of skips) l(Number(event.value.resumeOffset - event.value.skippedFromOffset));
      }
    }
  })().catch(() => {});
  await ready;
  return { onData: output.onData, onSkipped: (l) => skips.push(l) };
}

function attachOpener(client: Client<typeof TerminalService>) {
  return async (command: string): Promise<Target> => {
    const requests = new Channel<AttachRequest>();
    requests.push(
      create(AttachRequestSchema, {
        kind: { case: "open", value: { target: { case: "create", value: { command: ["bash", "-c", command] } } } },
      }),
    );
    const abort = new AbortController();
    const events = await followOutput(client.attach(requests, { signal: abort.signal }));
    return {
      write: (data) => requests.push(create(AttachRequestSchema, { kind: { case: "input", value: { data } } })),
      ...events,
      async close() {
        abort.abort();
      },
    };
  };
}

function browserOpener(client: Client<typeof TerminalService>) {
  return async (command: string): Promise<Target> => {
    const { session } = await client.createSession({ spec: { command: ["bash", "-c", command] } });
    const sessionId = session?.id ?? "";
    const abort = new AbortController();
    const events = await followOutput(client.streamOutput({ sessionId, fromOffset: 0n }, { signal: abort.signal }));
    let seq = 0n;
    return {
      write: (data) => client.writeInput({ sessionId, data, clientId: "bench", seq: ++seq }),
      ...events,
      async close() {
        abort.abort();
        await client.closeSession({ sessionId, force: true }).catch(() => {});
      },
    };
  };
}

/** The receive window of the Attach client's streams and of its connection, in bytes. */
const windowBytes = 4 * 1024 * 1024;

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
  return Math.round((kb / 1024) * 10) / 10;
}

async function makeFile(dir: string, bytes: number): Promise<string> {
  const file = join(dir, "output.txt");
  const out = createWriteStream(file);
  const line = Buffer.from(`${"The quick brown fox jumps over the lazy dog 0123456789 ".repeat(2).slice(0, 99)}\n`);
  const block = Buffer.concat(Array.from({ length: 1024 }, () => line));
  for (let written = 0; written < bytes; written += block.length) {
    if (!out.write(written + block.length <= bytes ? block : block.subarray(0, bytes - written))) {
      await once(out, "drain");
    }
  }
  out.end();
  await once(out, "finish");
  return file;
}

/** The round-trip figures of a target: p50 and p99 of `roundTrips`, in µs. */
async function roundTripFigures(open: (command: string) => Promise<Target>) {
  const times = await roundTrips(open);
  return { rtt_p50_us: Math.round(percentile(times, 50)), rtt_p99_us: Math.round(percentile(times, 99)) };
}

async function measure(name: string, open: (command: string) => Promise<Target>, file: string, bytes: number) {
  const rtt = await roundTripFigures(open);
  const { mbs, skippedBytes } = await throughput(open, file, bytes);
  const result: Result = {
    target: name,
    ...rtt,
    throughput_mb_s: Math.round(mbs * 10) / 10,
    skipped_bytes: skippedBytes,
  };
  console.log(JSON.stringify(result));
  return result;
}

/** Times round trips only (a target with no program behind it has no output to measure). */
async function measureRoundTrips(name: string, open: (command: string) => Promise<Target>) {
  const result = { target: name, ...(await roundTripFigures(open)) };
  console.log(JSON.stringify(result));
  return result;
}

/**
 * A gRPC (h2c) terminal client configured as an SDK would for terminal traffic: stream and
 * connection windows large enough that output is not held up waiting for WINDOW_UPDATE
 * round trips (Node's default is 64 KiB for both).
 */
function grpcTerminalClient(baseUrl: string, interceptors: Interceptor[] = []): Client<typeof TerminalService> {
  return createClient(
    TerminalService,
    createGrpcTransport({
      baseUrl,
      interceptors,
      sessionManager: new WideWindowSessionManager(baseUrl, {
        streamWindowBytes: windowBytes,
        connectionWindowBytes: windowBytes,
      }),
    }),
  );
}

/** Starts a bench server script (tsx) in its own process and reads the port it prints. */
async function spawnScript(script: string): Promise<{ child: ReturnType<typeof spawn>; port: number }> {
  const child = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, script)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = Number((await once(createInterface({ input: child.stdout as NodeJS.ReadableStream }), "line"))[0]);
  return { child, port };
}

async function startRunner(workspace: string): Promise<{ runner: SpawnedService; token: string }> {
  // The runner as it is deployed: the bundle from `npm run build`, with the flags of `npm run runner`.
  const runner = await spawnService(
    "runner/dist/main.js",
    ["--dev", "--workspace", workspace],
    {},
    (process.env.BENCH_RUNNER_NODE_OPTIONS ?? "--max-semi-space-size=1").split(" "),
  );
  const line = runner.output.find((l) => l.includes("user token:"));
  const token = line?.split("user token:")[1]?.trim();
  if (!token) throw new Error(`runner printed no token:\n${runner.output.join("\n")}`);
  return { runner, token };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "devex-bench-"));
  const bytes = megabytes * 1024 * 1024;
  const file = await makeFile(dir, bytes);
  const { child: relay, port } = await spawnScript("ws-relay.ts");
  const { child: h2Relay, port: h2Port } = await spawnScript("h2-relay.ts");
  const { child: echo, port: echoPort } = await spawnScript("connect-echo.ts");
  const { runner, token } = await startRunner(join(dir, "workspace"));
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const grpc = grpcTerminalClient(runner.url, [auth]);
  const connect = createClient(
    TerminalService,
    createConnectTransport({ baseUrl: runner.url, httpVersion: "1.1", interceptors: [auth] }),
  );
  try {
    const idleRss = await rssMb(runner.child.pid as number);
    const alone = await measure("pty-alone", openPty, file, bytes);
    const ws = await measure("ws-relay", wsOpener(port), file, bytes);
    const h2 = await measure("h2-relay", h2Opener(h2Port), file, bytes);
    const attach = await measure("attach", attachOpener(grpc), file, bytes);
    const browser = await measure("browser", browserOpener(connect), file, bytes);
    // Last, so the Attach figures above are taken as before; the client is warm by now,
    // which if anything flatters the floor.
    const floor = await measureRoundTrips(
      "connect-floor",
      attachOpener(grpcTerminalClient(`http://127.0.0.1:${echoPort}`)),
    );

    for (let i = 0; i < 50; i++) await grpc.createSession({ spec: { sessionId: `idle-${i}` } });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const fiftyRss = await rssMb(runner.child.pid as number);
    console.log(JSON.stringify({ target: "runner-memory", idle_rss_mb: idleRss, sessions_50_rss_mb: fiftyRss }));

    const ratios = {
      attach_p50_vs_ws: Math.round((attach.rtt_p50_us / ws.rtt_p50_us) * 100) / 100,
      attach_p99_us: attach.rtt_p99_us,
      attach_throughput_vs_pty: Math.round((attach.throughput_mb_s / alone.throughput_mb_s) * 100) / 100,
      browser_p50_vs_ws: Math.round((browser.rtt_p50_us / ws.rtt_p50_us) * 100) / 100,
      // Not targets: how far HTTP/2 alone and the protocol alone are from the relay, and
      // Attach from the protocol.
      h2_relay_p50_vs_ws: Math.round((h2.rtt_p50_us / ws.rtt_p50_us) * 100) / 100,
      floor_p50_vs_ws: Math.round((floor.rtt_p50_us / ws.rtt_p50_us) * 100) / 100,
      attach_p50_vs_floor: Math.round((attach.rtt_p50_us / floor.rtt_p50_us) * 100) / 100,
      idle_rss_mb: idleRss,
      sessions_50_rss_mb: fiftyRss,
    };
    const pass = {
      attach_p50_at_most_1_5x_ws: ratios.attach_p50_vs_ws <= 1.5,
      attach_p99_under_1ms: ratios.attach_p99_us < 1000,
      attach_throughput_at_least_0_9x_pty: ratios.attach_throughput_vs_pty >= 0.9,
      browser_p50_at_most_3x_ws: ratios.browser_p50_vs_ws <= 3,
      idle_rss_under_80mb: idleRss < 80,
      sessions_50_rss_under_200mb: fiftyRss < 200,
    };
    console.log(JSON.stringify({ target: "ratios", ...ratios, pass }));
  } finally {
    relay.kill();
    h2Relay.kill();
    echo.kill();
    await runner.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
