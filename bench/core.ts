/**
 * `npm run bench:core`: core's own costs, measured against baselines in the same run.
 *
 *   start-to-prompt  StartRepl until the first byte of a shell prompt through Attach, local
 *                    mode (embedded store, local orchestrator), with the standby pool (starts
 *                    BENCH_START_PAUSE_MS apart, default 2000, so it has refilled) and without
 *                    it; baseline: a runner process started directly, until the same first byte
 *   getrepl-*        unary GetRepl with an API key, core on Redis, 64 calls in flight over one
 *                    HTTP/2 connection and over eight, driven by h2load (apt-get install
 *                    nghttp2-client); baseline: the same server kit answering a fixed repl with
 *                    no authentication and no store; and the floors under both, the same
 *                    fixed answer from connect-node alone and from node:http2 alone
 *                    (all three: bench/support/stub-core.ts)
 *
 * Prints one JSON line per measurement, then the targets. Not a test: figures vary with the
 * machine. Options (environment): BENCH_STARTS (default 20), BENCH_SECONDS (default 5).
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { GetReplRequestSchema, ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import {
  type AttachRequest,
  AttachRequestSchema,
  SessionSpecSchema,
  TerminalService,
} from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { spawnService } from "@devex/kit/testing";
import { Channel } from "../runner/src/channel.js";
import { startCoreProcess } from "../services/core/test/support/core-process.js";
import { startRedisServer } from "../services/core/test/support/redis-server.js";

const starts = Number(process.env.BENCH_STARTS ?? 20);
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const startPauseMs = Number(process.env.BENCH_START_PAUSE_MS ?? 2000);
const concurrency = 64;
const execFileAsync = promisify(execFile);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** Opens a shell session over Attach and resolves when its first output byte arrives. */
async function firstByte(endpointUrl: string, token: string): Promise<void> {
  const terminal = createClient(
    TerminalService,
    createGrpcTransport({ baseUrl: endpointUrl, interceptors: [bearer(token)] }),
  );
  const requests = new Channel<AttachRequest>();
  requests.push(
    create(AttachRequestSchema, {
      kind: { case: "open", value: { target: { case: "create", value: create(SessionSpecSchema, {}) } } },
    }),
  );
  const abort = new AbortController();
  try {
    for await (const res of terminal.attach(requests, { signal: abort.signal })) {
      if (res.event.case === "output" && res.event.value.data.length > 0) return;
    }
    throw new Error("the session ended before any output");
  } finally {
    abort.abort();
    requests.close();
  }
}

interface StartTimes {
  /** StartRepl until the first prompt byte through Attach, sorted. */
  toPrompt: number[];
  /** StartRepl alone (until the runner is healthy), sorted. */
  startRepl: number[];
}

/** Starts and stops one repl `starts` times, `pauseMs` apart, on a core started with `args`. */
async function measureStarts(args: string[], pauseMs: number): Promise<StartTimes> {
  const core = await startCoreProcess(args);
  try {
    const repls = core.client(ReplService, await core.devApiKey());
    const { repl } = await repls.createRepl({ name: "bench", templateName: "blank" });
    const replId = repl?.id ?? "";
    const toPrompt: number[] = [];
    const startRepl: number[] = [];
    for (let i = 0; i < starts; i++) {
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
      const began = performance.now();
      const { access } = await repls.startRepl({ replId });
      const running = performance.now();
      await firstByte(access?.endpointUrl ?? "", access?.token ?? "");
      toPrompt.push(performance.now() - began);
      startRepl.push(running - began);
      await repls.stopRepl({ replId });
    }
    return { toPrompt: toPrompt.sort((a, b) => a - b), startRepl: startRepl.sort((a, b) => a - b) };
  } finally {
    await core.stop();
    await core.cleanup();
  }
}

/** A runner process started directly (dev mode prints a token) until the same first byte. */
async function runnerAlone(): Promise<number[]> {
  const times: number[] = [];
  const scratch = await mkdtemp(join(tmpdir(), "devex-bench-runner-"));
  try {
    for (let i = 0; i < Math.min(starts, 10); i++) {
      const began = performance.now();
      const runner = await spawnService(
        "runner/dist/main.js",
        ["--dev", "--workspace", join(scratch, "workspace"), "--home", scratch],
        {},
        ["--max-semi-space-size=1"],
      );
      const token = runner.output.map((line) => /user token:\s+(\S+)/.exec(line)?.[1]).find(Boolean);
      if (!token) throw new Error(`no dev token in the runner's output:\n${runner.output.join("\n")}`);
      await firstByte(runner.url, token);
      times.push(performance.now() - began);
      await runner.stop();
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return times.sort((a, b) => a - b);
}

/**
 * Start to prompt with the standby pool (default: one warmed runner; starts BENCH_START_PAUSE_MS
 * apart, as people start repls, so the pool has refilled) and without it (every start spawns a
 * runner), against a runner started directly.
 */
async function startToPrompt(): Promise<void> {
  const baseline = await runnerAlone();
  const cases = [
    { target: "start-to-prompt", args: [], pauseMs: startPauseMs },
    { target: "start-to-prompt-no-standby", args: ["--runner-standby-count", "0"], pauseMs: 0 },
  ];
  for (const { target, args, pauseMs } of cases) {
    const { toPrompt, startRepl } = await measureStarts(args, pauseMs);
    console.log(
      JSON.stringify({
        target,
        starts,
        pause_between_starts_ms: pauseMs,
        p50_ms: Math.round(percentile(toPrompt, 50)),
        p99_ms: Math.round(percentile(toPrompt, 99)),
        start_repl_p50_ms: Math.round(percentile(startRepl, 50)),
        runner_alone_p50_ms: Math.round(percentile(baseline, 50)),
        ratio_vs_runner_alone: Number((percentile(toPrompt, 50) / percentile(baseline, 50)).toFixed(2)),
      }),
    );
  }
}

interface Throughput {
  calls_per_s: number;
  p50_ms: number;
  p99_ms: number;
}

/** A gRPC frame (uncompressed, length-prefixed) of GetReplRequest { repl_id }. */
function getReplFrame(replId: string): Buffer {
  const message = toBinary(
    GetReplRequestSchema,
    create(GetReplRequestSchema, { repl: { case: "replId", value: replId } }),
  );
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

/**
 * 64 GetRepl calls in flight for BENCH_SECONDS over `connections` HTTP/2 connections, driven
 * by h2load (nghttp2's load generator, written in C, so the client's own cost stays small
 * on a 2-core machine), with per-call latencies from its log.
 */
async function hammer(url: string, replId: string, apiKey: string, connections: number): Promise<Throughput> {
  const dir = await mkdtemp(join(tmpdir(), "devex-bench-h2load-"));
  try {
    const body = join(dir, "request.bin");
    const log = join(dir, "calls.log");
    await writeFile(body, getReplFrame(replId));
    const args = [
      `--duration=${seconds}`,
      "--warm-up-time=1",
      `--clients=${connections}`,
      `--max-concurrent-streams=${concurrency / connections}`,
      `--data=${body}`,
      "--header=content-type: application/grpc",
      "--header=te: trailers",
      ...(apiKey ? [`--header=authorization: Bearer ${apiKey}`] : []),
      `--log-file=${log}`,
      `${url}/devex.core.v1.ReplService/GetRepl`,
    ];
    const { stdout } = await execFileAsync("h2load", args, { maxBuffer: 16 * 1024 * 1024 });
    const rate = Number(/finished in [\d.]+s, ([\d.]+) req\/s/.exec(stdout)?.[1]);
    const failed = Number(/(\d+) failed/.exec(stdout)?.[1] ?? 0);
    if (!Number.isFinite(rate) || failed > 0) throw new Error(`h2load failed:\n${stdout}`);
    const latencies = (await readFile(log, "utf8"))
      .trim()
      .split("\n")
      .map((line) => Number(line.split("\t")[2]) / 1000)
      .sort((a, b) => a - b);
    return {
      calls_per_s: Math.round(rate),
      p50_ms: Number(percentile(latencies, 50).toFixed(2)),
      p99_ms: Number(percentile(latencies, 99).toFixed(2)),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function getReplThroughput(): Promise<void> {
  const redis = await startRedisServer();
  const core = await startCoreProcess(["--state-store", "redis", "--redis-url", redis.url]);
  const stub = await spawnService("bench/support/stub-core.ts");
  const connectAlone = await spawnService("bench/support/stub-core.ts", ["--layer", "connect"]);
  const http2Alone = await spawnService("bench/support/stub-core.ts", ["--layer", "http2"]);
  try {
    const apiKey = await core.devApiKey();
    const client = core.client(ReplService, apiKey);
    const { repl } = await client.createRepl({ name: "bench", templateName: "blank" });
    const replId = repl?.id ?? "";
    // h2load sees HTTP statuses only (gRPC reports errors in trailers): check the call itself first.
    const checked = await client.getRepl({ repl: { case: "replId", value: replId } });
    if (checked.repl?.id !== replId) throw new Error("GetRepl does not answer the repl");
    for (const connections of [1, 8]) {
      const measured = await hammer(core.url, replId, apiKey, connections);
      const baseline = await hammer(stub.url, replId, "", connections);
      const connectFloor = await hammer(connectAlone.url, replId, "", connections);
      const http2Floor = await hammer(http2Alone.url, replId, "", connections);
      console.log(
        JSON.stringify({
          target: `getrepl-${connections === 1 ? "one-connection" : `${connections}-connections`}`,
          concurrency,
          ...measured,
          stub_calls_per_s: baseline.calls_per_s,
          stub_p99_ms: baseline.p99_ms,
          ratio_vs_stub: Number((measured.calls_per_s / baseline.calls_per_s).toFixed(2)),
          connect_alone_calls_per_s: connectFloor.calls_per_s,
          connect_alone_p99_ms: connectFloor.p99_ms,
          http2_alone_calls_per_s: http2Floor.calls_per_s,
        }),
      );
    }
  } finally {
    await Promise.all([stub.stop(), connectAlone.stop(), http2Alone.stop()]);
    await core.stop();
    await core.cleanup();
    await redis.stop();
  }
}

await startToPrompt();
await getReplThroughput();
console.log(
  "targets: start-to-prompt p50 < 300 ms; getrepl >= 5000 calls/s with p99 < 20 ms, over one connection and over several",
);
