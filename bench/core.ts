/**
 * `npm run bench:core`: core's own costs, measured against baselines in the same run.
 *
 *   start-to-prompt  StartRepl until the first byte of a shell prompt through Attach, local
 *                    mode (embedded store, local orchestrator), four ways in the same run: each
 *                    runner in a bubblewrap sandbox (`--sandbox bwrap`, the default) and without
 *                    isolation (`--sandbox none`), each with the standby pool (one warmed runner;
 *                    starts BENCH_START_PAUSE_MS apart, default 2000, so it has refilled) and
 *                    without it (every start boots a runner); the sandboxed lines give the ratio
 *                    to the unsandboxed one of the same pool setting. Baseline: a runner process
 *                    started directly, until the same first byte
 *   runner-memory    RSS of the repl's runner process (`devex-runner` in /proc/<pid>/comm, found
 *                    among the processes of the repl's sandbox) right after StartRepl and after
 *                    BENCH_IDLE_SECONDS (default 5) idle, for each of the four setups
 *   getrepl-*        unary GetRepl with an API key, core on Redis, 64 calls in flight over one
 *                    HTTP/2 connection and over eight, driven by h2load (apt-get install
 *                    nghttp2-client); baseline: the same server kit answering a fixed repl with
 *                    no authentication and no store; and the floors under both, the same
 *                    fixed answer from connect-node alone and from node:http2 alone
 *                    (all three: bench/support/stub-core.ts)
 *
 * Prints one JSON line per measurement, then the targets. Not a test: figures vary with the
 * machine. Options (environment): BENCH_STARTS (default 20), BENCH_SECONDS (default 5),
 * BENCH_IDLE_SECONDS (default 5), BENCH_SANDBOXES (default "bwrap,none"), BENCH_PARTS (default
 * "start,getrepl": start covers start-to-prompt and runner-memory). The bwrap sandbox needs root.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
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
const idleSeconds = Number(process.env.BENCH_IDLE_SECONDS ?? 5);
const sandboxKinds = (process.env.BENCH_SANDBOXES ?? "bwrap,none").split(",").filter(Boolean);
const parts = new Set((process.env.BENCH_PARTS ?? "start,getrepl").split(",").filter(Boolean));
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
  /** From StartRepl's answer until the first prompt byte (Attach, shell spawn), sorted. */
  attach: number[];
  /** Starts that core served with a standby runner (its "runner listening" log says so). */
  standbyHits: number;
  memory: RunnerMemory;
}

interface RunnerMemory {
  /** RSS of the repl's runner process right after StartRepl answered, in MB. */
  afterStartMb: number;
  /** The same after `idleSeconds` with nothing attached, in MB. */
  idleMb: number;
  /** RSS of the other processes of the runner's sandbox (bwrap's own), idle, in MB. */
  sandboxOtherMb: number;
}

/** Every process's parent, from /proc/<pid>/stat. */
async function processParents(): Promise<Map<number, number>> {
  const parents = new Map<number, number>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, "utf8");
      // The name (field 2) may hold spaces and parentheses: the fields after it follow the last ")".
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      parents.set(Number(name), Number(fields[1]));
    } catch {
      // gone meanwhile
    }
  }
  return parents;
}

/** Resident memory of a process in MB (VmRSS), or 0 once it is gone. */
async function rssMb(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/**
 * The processes of a repl's sandbox: the outermost one core recorded (`<dataDir>/runners/
 * <replId>.json`: bwrap's shim, or the runner itself without a sandbox) and all its
 * descendants; the runner among them is the one named `devex-runner`.
 */
async function sandboxProcesses(dataDir: string, replId: string): Promise<{ runner: number; others: number[] }> {
  const record = JSON.parse(await readFile(join(dataDir, "runners", `${replId}.json`), "utf8")) as { pid: number };
  const parents = await processParents();
  const tree = [record.pid];
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, parent] of parents) if (parent === tree[i]) tree.push(pid);
  }
  let runner = 0;
  const others: number[] = [];
  for (const pid of tree) {
    const comm = await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "");
    if (comm.trim() === "devex-runner" && runner === 0) runner = pid;
    else others.push(pid);
  }
  if (runner === 0) throw new Error(`no devex-runner process under pid ${record.pid} (repl ${replId})`);
  return { runner, others };
}

/** Starts the repl, measures its runner's RSS right away and after `idleSeconds` idle, and stops it. */
async function measureMemory(
  dataDir: string,
  repls: Client<typeof ReplService>,
  replId: string,
): Promise<RunnerMemory> {
  await repls.startRepl({ replId });
  try {
    const { runner } = await sandboxProcesses(dataDir, replId);
    const afterStartMb = await rssMb(runner);
    await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
    const { others } = await sandboxProcesses(dataDir, replId);
    const idleMb = await rssMb(runner);
    let sandboxOtherMb = 0;
    for (const pid of others) sandboxOtherMb += await rssMb(pid);
    return { afterStartMb, idleMb, sandboxOtherMb };
  } finally {
    await repls.stopRepl({ replId });
  }
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
    const attach: number[] = [];
    for (let i = 0; i < starts; i++) {
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
      const began = performance.now();
      const { access } = await repls.startRepl({ replId });
      const running = performance.now();
      await firstByte(access?.endpointUrl ?? "", access?.token ?? "");
      const prompt = performance.now();
      toPrompt.push(prompt - began);
      startRepl.push(running - began);
      attach.push(prompt - running);
      await repls.stopRepl({ replId });
    }
    const standbyHits = core.service.output.filter(
      (line) => line.includes('"msg":"runner listening"') && line.includes('"standby":true'),
    ).length;
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
    const memory = await measureMemory(core.dataDir, repls, replId);
    const sort = (values: number[]) => values.sort((a, b) => a - b);
    return { toPrompt: sort(toPrompt), startRepl: sort(startRepl), attach: sort(attach), standbyHits, memory };
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

const round = (value: number) => Math.round(value);
const round1 = (value: number) => Number(value.toFixed(1));

/**
 * Start to prompt, and the runner's memory, with each runner in a bwrap sandbox and without
 * isolation, each with the standby pool (default: one warmed runner; starts
 * BENCH_START_PAUSE_MS apart, as people start repls, so the pool has refilled) and without it
 * (every start creates a sandbox and boots a runner), against a runner started directly.
 * Unsandboxed cores run first, so each sandboxed line carries its ratio to them.
 */
async function startToPrompt(): Promise<{ bwrapStandbyP50?: number; idleMb: number[] }> {
  const baseline = await runnerAlone();
  const pools = [
    { pool: "standby", args: [] as string[], pauseMs: startPauseMs },
    { pool: "no-standby", args: ["--runner-standby-count", "0"], pauseMs: 0 },
  ];
  const results = new Map<string, StartTimes>();
  const ordered = [...sandboxKinds].sort((a, b) => (a === "none" ? -1 : b === "none" ? 1 : 0));
  for (const sandbox of ordered) {
    for (const { pool, args, pauseMs } of pools) {
      results.set(`${sandbox}/${pool}`, await measureStarts(["--sandbox", sandbox, ...args], pauseMs));
    }
  }
  const idleMb: number[] = [];
  for (const sandbox of sandboxKinds) {
    for (const { pool, pauseMs } of pools) {
      const measured = results.get(`${sandbox}/${pool}`);
      if (!measured) continue;
      const { toPrompt, startRepl, attach, standbyHits } = measured;
      const unsandboxed = sandbox === "none" ? undefined : results.get(`none/${pool}`);
      console.log(
        JSON.stringify({
          target: `start-to-prompt-${sandbox}-${pool}`,
          starts,
          standby_hits: standbyHits,
          pause_between_starts_ms: pauseMs,
          p50_ms: round(percentile(toPrompt, 50)),
          p99_ms: round(percentile(toPrompt, 99)),
          start_repl_p50_ms: round(percentile(startRepl, 50)),
          attach_to_prompt_p50_ms: round(percentile(attach, 50)),
          ...(unsandboxed
            ? {
                no_sandbox_p50_ms: round(percentile(unsandboxed.toPrompt, 50)),
                no_sandbox_p99_ms: round(percentile(unsandboxed.toPrompt, 99)),
                ratio_vs_no_sandbox_p50: Number(
                  (percentile(toPrompt, 50) / percentile(unsandboxed.toPrompt, 50)).toFixed(2),
                ),
                ratio_vs_no_sandbox_p99: Number(
                  (percentile(toPrompt, 99) / percentile(unsandboxed.toPrompt, 99)).toFixed(2),
                ),
              }
            : {}),
          runner_alone_p50_ms: round(percentile(baseline, 50)),
          ratio_vs_runner_alone: Number((percentile(toPrompt, 50) / percentile(baseline, 50)).toFixed(2)),
        }),
      );
    }
  }
  for (const sandbox of sandboxKinds) {
    for (const { pool } of pools) {
      const measured = results.get(`${sandbox}/${pool}`);
      if (!measured) continue;
      idleMb.push(measured.memory.idleMb);
      console.log(
        JSON.stringify({
          target: `runner-memory-${sandbox}-${pool}`,
          rss_after_start_mb: round1(measured.memory.afterStartMb),
          rss_idle_mb: round1(measured.memory.idleMb),
          idle_seconds: idleSeconds,
          ...(sandbox === "none" ? {} : { sandbox_other_processes_rss_mb: round1(measured.memory.sandboxOtherMb) }),
        }),
      );
    }
  }
  const bwrapStandby = results.get("bwrap/standby");
  return {
    ...(bwrapStandby ? { bwrapStandbyP50: percentile(bwrapStandby.toPrompt, 50) } : {}),
    idleMb,
  };
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

if (parts.has("start")) {
  const { bwrapStandbyP50, idleMb } = await startToPrompt();
  const memoryMet = idleMb.every((mb) => mb < 80);
  console.log(
    `start: bwrap with standby p50 ${bwrapStandbyP50 === undefined ? "not measured" : `${Math.round(bwrapStandbyP50)} ms (${bwrapStandbyP50 < 300 ? "met" : "MISSED"})`}; ` +
      `runner idle RSS max ${Math.max(...idleMb).toFixed(1)} MB (${memoryMet ? "met" : "MISSED"})`,
  );
}
if (parts.has("getrepl")) await getReplThroughput();
console.log(
  "targets: start-to-prompt with the sandbox (bwrap, standby) p50 < 300 ms; runner idle RSS < 80 MB; " +
    "getrepl >= 5000 calls/s with p99 < 20 ms, over one connection and over several",
);
