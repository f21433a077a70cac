import { createHash, randomBytes } from "node:crypto";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import { type Client, Code, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import { createLogger, type Server } from "@devex/kit";
import { bufCurl, codeOf } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttachClient, plainBash } from "../../../runner/test/attach-client.js";
import { startTestRunner, type TestRunner } from "../../../runner/test/harness.js";
import { newId } from "../src/ids.js";
import { createReplProxy, type ReplProxy, startReplOrigin } from "../src/routing/proxy.js";

type Protocol = "grpc" | "connect-h1" | "grpc-web-h1";

const logger = createLogger({ service: "core", level: process.env.DEVEX_TEST_LOG_LEVEL ?? "silent" });
/** A repl whose runner endpoint is a port nothing listens on. */
const unreachableReplId = newId("repl");
/** A repl whose runner breaks its streams. */
const brokenReplId = newId("repl");
let brokenEndpoint: string | undefined;
let runner: TestRunner;
let proxy: ReplProxy;
let origin: Server;
let userToken: string;

function transport(baseUrl: string, protocol: Protocol, token?: string): Transport {
  const interceptors: Interceptor[] = token
    ? [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${token}`);
          return next(req);
        },
      ]
    : [];
  if (protocol === "connect-h1") return createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors });
  if (protocol === "grpc-web-h1") return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors });
  return createGrpcTransport({ baseUrl, interceptors });
}

/** A client of a runner service through the repl origin, as a browser, the SDK or the CLI has it. */
function viaProxy<S extends DescService>(
  service: S,
  protocol: Protocol = "grpc",
  token: string | undefined = userToken,
) {
  return createClient(service, transport(`${origin.url}/${runner.replId}`, protocol, token));
}

async function attachedClients(): Promise<number> {
  const control = await runner.client(RunnerService, { role: "core" });
  return (await control.getStatus({})).attachedClients;
}

async function until(predicate: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Runs `echo <marker>-$((6*7))` in a new session through the browser form of the terminal
 * (StreamOutput, then WriteInput) and returns the output read until `<marker>-42` arrived;
 * the session is closed afterwards.
 */
async function echoThroughBrowserForm(terminal: Client<typeof TerminalService>, marker: string): Promise<string> {
  const { session } = await terminal.createSession({ spec: { command: plainBash } });
  const sessionId = session?.id ?? "";
  const abort = new AbortController();
  let text = "";
  const reading = (async () => {
    for await (const res of terminal.streamOutput({ sessionId }, { signal: abort.signal })) {
      if (res.event.case === "output") text += new TextDecoder().decode(res.event.value.data);
      if (text.includes(`${marker}-42`)) return;
    }
  })();
  await until(async () => (await attachedClients()) === 1, "the stream to be attached");
  await terminal.writeInput({ sessionId, data: new TextEncoder().encode(`echo ${marker}-$((6*7))\r`) });
  await reading;
  abort.abort();
  await terminal.closeSession({ sessionId, force: true });
  return text;
}

beforeAll(async () => {
  runner = await startTestRunner();
  userToken = await runner.token("user", 3_600_000);
  proxy = createReplProxy({
    logger,
    async resolve(replId) {
      if (replId === runner.replId) return runner.url;
      if (replId === unreachableReplId) return "http://127.0.0.1:1";
      if (replId === brokenReplId) return brokenEndpoint;
      return undefined;
    },
  });
  origin = await startReplOrigin({ port: 0, logger, proxy, shutdownGraceMs: 500 });
});

afterAll(async () => {
  await origin?.close(500);
  await proxy?.close();
  await runner?.close();
});

describe("repl proxy", () => {
  it("carries a bidirectional terminal (Attach) over h2c: a shell runs a command and its output comes back", async () => {
    const terminal = viaProxy(TerminalService, "grpc");
    const client = new AttachClient(terminal, {
      target: { case: "create", value: { command: plainBash, cols: 80, rows: 24 } } as never,
    });
    await client.until((c) => c.of("attached").length > 0, "attached");
    client.type("echo hi-$((40+2))\r");
    await client.waitForText("hi-42");
    // Full duplex: more input after output has come back on the same stream.
    client.type("echo again-$((6*7))\r");
    await client.waitForText("again-42");
    client.type("exit\r");
    await client.until((c) => c.of("exit").length > 0, "exit");
    await client.finish();
    expect(client.error).toBeUndefined();
  });

  it("serves the browser form over Connect on HTTP/1.1: CreateSession, StreamOutput, WriteInput", async () => {
    const text = await echoThroughBrowserForm(viaProxy(TerminalService, "connect-h1"), "browser");
    expect(text).toContain("browser-42");
  });

  it("streams a 4 MiB download through unchanged, over gRPC and over Connect on HTTP/1.1", async () => {
    const content = randomBytes(4 * 1024 * 1024);
    const direct = await runner.client(FilesystemService);
    await direct.writeFile({ path: "big.bin", content });
    const sha256 = createHash("sha256").update(content).digest("hex");
    for (const protocol of ["grpc", "connect-h1", "grpc-web-h1"] as const) {
      const chunks: Uint8Array[] = [];
      let trailer = "";
      for await (const res of viaProxy(FilesystemService, protocol).download({ path: "big.bin" })) {
        if (res.kind.case === "chunk") chunks.push(res.kind.value);
        if (res.kind.case === "trailer") trailer = res.kind.value.sha256;
      }
      expect(chunks.length, protocol).toBeGreaterThan(1);
      expect(Buffer.concat(chunks).equals(content), protocol).toBe(true);
      expect(trailer, protocol).toBe(sha256);
    }
  });

  it("keeps serving other calls to a runner while callers that do not read hold their downloads", async () => {
    const direct = await runner.client(FilesystemService);
    await direct.writeFile({ path: "stalled.bin", content: randomBytes(4 * 1024 * 1024) });
    // Each stalled caller on its own connection; upstream they share one HTTP/2 connection.
    const stalled: AsyncIterator<unknown>[] = [];
    for (let i = 0; i < 4; i++) {
      const iterator = viaProxy(FilesystemService).download({ path: "stalled.bin" })[Symbol.asyncIterator]();
      await iterator.next();
      stalled.push(iterator);
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    const fs = viaProxy(FilesystemService);
    expect((await fs.stat({ path: "." }, { timeoutMs: 5_000 })).entry?.path).toBe(".");
    let bytes = 0;
    for await (const res of fs.download({ path: "stalled.bin" }, { timeoutMs: 10_000 })) {
      if (res.kind.case === "chunk") bytes += res.kind.value.length;
    }
    expect(bytes).toBe(4 * 1024 * 1024);
    for (const iterator of stalled) while (!(await iterator.next()).done);
  });

  it("works for buf curl: reflection lists the runner's methods, and Stat answers with the token", async () => {
    const base = `${origin.url}/${runner.replId}`;
    const listed = await bufCurl(["--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", base]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain("devex.runner.v1.FilesystemService/Stat");

    const url = `${base}/devex.runner.v1.FilesystemService/Stat`;
    const auth = ["-H", `Authorization: Bearer ${userToken}`];
    const grpc = await bufCurl(["--protocol", "grpc", "--http2-prior-knowledge", ...auth, "-d", '{"path":"."}', url]);
    expect(grpc.code, grpc.stderr).toBe(0);
    expect(JSON.parse(grpc.stdout)).toMatchObject({ entry: { path: "." } });
    const connect = await bufCurl(["--protocol", "connect", ...auth, "-d", '{"path":"."}', url]);
    expect(connect.code, connect.stderr).toBe(0);
    expect(JSON.parse(connect.stdout)).toMatchObject({ entry: { path: "." } });
  });

  it("lets buf curl detach from Attach by closing its side: no exit needed, the session runs on", async () => {
    const input = Buffer.from("echo hello from $((40+2))\r").toString("base64");
    const messages = [
      JSON.stringify({ open: { create: { command: plainBash } } }),
      JSON.stringify({ input: { data: input } }),
    ].join("\n");
    const began = Date.now();
    const res = await bufCurl(
      [
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-H",
        `Authorization: Bearer ${userToken}`,
        "-d",
        "@-",
        `${origin.url}/${runner.replId}/devex.runner.v1.TerminalService/Attach`,
      ],
      messages,
    );
    expect(res.code, res.stderr).toBe(0);
    expect(Date.now() - began).toBeLessThan(10_000);
    const events = res.stdout.split(/\n(?=\{)/).map((chunk) => JSON.parse(chunk) as Record<string, { data?: string }>);
    const output = events.map((e) => (e.output?.data ? Buffer.from(e.output.data, "base64").toString() : "")).join("");
    expect(output).toContain("hello from 42");
    expect(events.some((e) => "exit" in e)).toBe(false);
    const sessionId = (events[0]?.attached as { session?: { id?: string } } | undefined)?.session?.id ?? "";
    const terminal = await runner.client(TerminalService);
    const { session } = await terminal.getSession({ sessionId });
    expect(session?.attachedClients).toBe(0);
    expect(session?.exit).toBeUndefined();
    await terminal.closeSession({ sessionId, force: true });
  });

  it("answers NotFound for an unknown repl in the caller's protocol", async () => {
    const unknown = `${origin.url}/${newId("repl")}`;
    for (const protocol of ["grpc", "connect-h1", "grpc-web-h1"] as const) {
      const fs = createClient(FilesystemService, transport(unknown, protocol, userToken));
      expect(await codeOf(() => fs.stat({ path: "." })), protocol).toBe(Code.NotFound);
      const terminal = createClient(TerminalService, transport(unknown, protocol, userToken));
      const stream = async () => {
        for await (const _ of terminal.streamOutput({ sessionId: "nope" })) {
          // nothing comes
        }
      };
      expect(await codeOf(stream), `${protocol} stream`).toBe(Code.NotFound);
    }
    const res = await fetch(`${unknown}/devex.runner.v1.FilesystemService/Stat`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${userToken}` },
      body: '{"path":"."}',
    });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: "not_found" });
  });

  it("answers Unavailable when the runner cannot be reached", async () => {
    const base = `${origin.url}/${unreachableReplId}`;
    for (const protocol of ["grpc", "connect-h1", "grpc-web-h1"] as const) {
      const fs = createClient(FilesystemService, transport(base, protocol, userToken));
      expect(await codeOf(() => fs.stat({ path: "." })), protocol).toBe(Code.Unavailable);
    }
  });

  it("passes the runner's own Unauthenticated through when the token is missing", async () => {
    for (const protocol of ["grpc", "connect-h1", "grpc-web-h1"] as const) {
      const fs = viaProxy(FilesystemService, protocol, "");
      expect(await codeOf(() => fs.stat({ path: "." })), protocol).toBe(Code.Unauthenticated);
    }
    const core = viaProxy(RunnerService, "grpc", userToken);
    expect(await codeOf(() => core.getStatus({}))).toBe(Code.PermissionDenied);
  });

  it("keeps the origin's own routes: health answers, other paths are 404", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: origin.url }));
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect((await fetch(`${origin.url}/${runner.replId}/metrics`)).status).toBe(404);
    expect((await fetch(`${origin.url}/elsewhere`)).status).toBe(404);
    expect((await fetch(`${origin.url}/repl_short/x.Y/Z`, { method: "POST" })).status).toBe(404);
  });

  it("cancels the runner's stream when the caller goes away mid-stream, over h2c and HTTP/1.1", async () => {
    expect(await attachedClients()).toBe(0);
    const attach = new AttachClient(viaProxy(TerminalService, "grpc"), {
      target: { case: "create", value: { command: plainBash } } as never,
    });
    await attach.until((c) => c.of("attached").length > 0, "attached");
    expect(await attachedClients()).toBe(1);
    await attach.disconnect();
    await until(async () => (await attachedClients()) === 0, "the runner to see the Attach stream end");

    const terminal = viaProxy(TerminalService, "connect-h1");
    const sessionId = attach.of("attached")[0]?.session?.id ?? "";
    const abort = new AbortController();
    const reading = (async () => {
      for await (const _ of terminal.streamOutput({ sessionId }, { signal: abort.signal })) {
        // keep reading until canceled
      }
    })();
    await until(async () => (await attachedClients()) === 1, "StreamOutput to be attached");
    abort.abort();
    expect(await codeOf(() => reading)).toBe(Code.Canceled);
    await until(async () => (await attachedClients()) === 0, "the runner to see the StreamOutput stream end");
  });

  it("ends the caller's stream when the runner's stream breaks mid-stream", async () => {
    // A stand-in runner that answers, then loses its connection without ending the stream.
    const broken = http2.createServer();
    broken.on("stream", (stream) => {
      stream.respond({ ":status": 200, "content-type": "application/grpc+proto" });
      setTimeout(() => stream.session?.destroy(), 100);
    });
    await new Promise<void>((resolve) => broken.listen(0, "127.0.0.1", resolve));
    brokenEndpoint = `http://127.0.0.1:${(broken.address() as AddressInfo).port}`;
    try {
      const terminal = createClient(TerminalService, transport(`${origin.url}/${brokenReplId}`, "grpc", userToken));
      const began = Date.now();
      const code = await codeOf(async () => {
        for await (const _ of terminal.streamOutput({ sessionId: "s" })) {
          // nothing comes before the break
        }
      });
      // Not Canceled: the caller did not cancel, the runner's side broke.
      expect(code).toBe(Code.Internal);
      expect(Date.now() - began).toBeLessThan(5_000);
    } finally {
      broken.close();
    }
  });

  it("measures the latency the proxy hop adds to unary calls (printed, not asserted)", async () => {
    const rounds = 300;
    const measure = async (client: { stat(req: { path: string }): Promise<unknown> }) => {
      for (let i = 0; i < 30; i++) await client.stat({ path: "." });
      const samples: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const began = performance.now();
        await client.stat({ path: "." });
        samples.push(performance.now() - began);
      }
      samples.sort((a, b) => a - b);
      const at = (q: number) => (samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? 0).toFixed(3);
      return { p50: Number(at(0.5)), p99: Number(at(0.99)) };
    };
    const lines: string[] = [];
    for (const protocol of ["grpc", "connect-h1"] as const) {
      const direct = await measure(createClient(FilesystemService, transport(runner.url, protocol, userToken)));
      const proxied = await measure(viaProxy(FilesystemService, protocol));
      lines.push(
        `${protocol}: direct p50 ${direct.p50} ms p99 ${direct.p99} ms; via proxy p50 ${proxied.p50} ms p99 ${proxied.p99} ms; ` +
          `added p50 ${(proxied.p50 - direct.p50).toFixed(3)} ms`,
      );
    }
    console.log(`FilesystemService.Stat, ${rounds} sequential calls each:\n  ${lines.join("\n  ")}`);
  });
});

describe("repl origin limits", () => {
  /** A repl origin of its own, with the proxy's limits set by the test. */
  async function limitedOrigin(limits: { maxCallsPerClient: number; maxCallsPerRepl: number }) {
    const limitedProxy = createReplProxy({ logger, resolve: async () => runner.url, ...limits });
    const server = await startReplOrigin({ port: 0, logger, proxy: limitedProxy, shutdownGraceMs: 500 });
    return {
      client<S extends DescService>(service: S, protocol: Protocol, token: string) {
        return createClient(service, transport(`${server.url}/${runner.replId}`, protocol, token));
      },
      url: `${server.url}/${runner.replId}`,
      async close() {
        await server.close(500);
        await limitedProxy.close();
      },
    };
  }

  /** Holds a StreamOutput of `sessionId` open until `signal` aborts; resolves once the runner counts it. */
  async function holdStream(terminal: Client<typeof TerminalService>, sessionId: string, signal: AbortSignal) {
    const direct = await runner.client(TerminalService);
    const before = (await direct.getSession({ sessionId })).session?.attachedClients ?? 0;
    void (async () => {
      for await (const _ of terminal.streamOutput({ sessionId }, { signal })) {
        // held open
      }
    })().catch(() => {});
    await until(
      async () => ((await direct.getSession({ sessionId })).session?.attachedClients ?? 0) > before,
      "the stream to be attached",
    );
  }

  it("refuses calls over a client's or a repl's limit with ResourceExhausted in the caller's protocol", async () => {
    const limited = await limitedOrigin({ maxCallsPerClient: 2, maxCallsPerRepl: 3 });
    const [a, b, c] = [userToken, await runner.token("user", 7_200_000), await runner.token("user", 10_800_000)];
    const direct = await runner.client(TerminalService);
    const { session } = await direct.createSession({ spec: { command: ["sleep", "60"] } });
    const sessionId = session?.id ?? "";
    const held = new AbortController();
    try {
      // Client a holds its two calls.
      await holdStream(limited.client(TerminalService, "grpc", a), sessionId, held.signal);
      await holdStream(limited.client(TerminalService, "connect-h1", a), sessionId, held.signal);
      for (const protocol of ["grpc", "connect-h1", "grpc-web-h1"] as const) {
        const terminal = limited.client(TerminalService, protocol, a);
        expect(await codeOf(() => terminal.getSession({ sessionId })), protocol).toBe(Code.ResourceExhausted);
        const stream = async () => {
          for await (const _ of terminal.streamOutput({ sessionId })) {
            // refused before anything comes
          }
        };
        expect(await codeOf(stream), `${protocol} stream`).toBe(Code.ResourceExhausted);
      }
      // Another client still gets through, up to the repl's limit.
      expect((await limited.client(TerminalService, "grpc", b).getSession({ sessionId })).session?.id).toBe(sessionId);
      await holdStream(limited.client(TerminalService, "grpc", b), sessionId, held.signal);
      for (const protocol of ["grpc", "connect-h1", "grpc-web-h1"] as const) {
        const terminal = limited.client(TerminalService, protocol, c);
        expect(await codeOf(() => terminal.getSession({ sessionId })), protocol).toBe(Code.ResourceExhausted);
      }
      const plain = await fetch(`${limited.url}/devex.runner.v1.TerminalService/GetSession`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${c}` },
        body: JSON.stringify({ sessionId }),
      });
      expect(plain.status).toBe(429);
      expect(await plain.json()).toMatchObject({ code: "resource_exhausted" });
      // Calls that end give their places back.
      held.abort();
      await until(
        async () => ((await direct.getSession({ sessionId })).session?.attachedClients ?? 0) === 0,
        "the held streams to end",
      );
      for (const token of [a, c]) {
        const terminal = limited.client(TerminalService, "grpc", token);
        expect((await terminal.getSession({ sessionId })).session?.id).toBe(sessionId);
      }
    } finally {
      held.abort();
      await direct.closeSession({ sessionId, force: true });
      await limited.close();
    }
  });

  it("keeps other clients' streams when one client cancels 1,500 calls at once", async () => {
    // A runner's HTTP/2 server ends a connection, every stream on it, after 1,000 resets in a burst.
    const limited = await limitedOrigin({ maxCallsPerClient: 10_000, maxCallsPerRepl: 10_000 });
    const other = await runner.token("user", 7_200_000);
    const direct = await runner.client(TerminalService);
    const attach = new AttachClient(limited.client(TerminalService, "grpc", userToken), {
      target: { case: "create", value: { command: plainBash } } as never,
    });
    const { session } = await direct.createSession({ spec: { command: ["sleep", "60"] } });
    const sessionId = session?.id ?? "";
    const flood = new AbortController();
    try {
      await attach.until((c) => c.of("attached").length > 0, "attached");
      const streams = Array.from({ length: 5 }, () => limited.client(TerminalService, "grpc", other));
      const readers = Array.from({ length: 1_500 }, (_, i) =>
        (async () => {
          for await (const _ of (streams[i % streams.length] as Client<typeof TerminalService>).streamOutput(
            { sessionId },
            { signal: flood.signal },
          )) {
            // held open until the flood is canceled
          }
        })().catch(() => {}),
      );
      await until(
        async () => ((await direct.getSession({ sessionId })).session?.attachedClients ?? 0) === 1_500,
        "1,500 streams to be attached",
        30_000,
      );
      flood.abort();
      await Promise.all(readers);
      await until(
        async () => ((await direct.getSession({ sessionId })).session?.attachedClients ?? 0) === 0,
        "the canceled streams to end",
      );
      attach.type("echo still-$((6*7))\r");
      await attach.waitForText("still-42", 5_000);
      expect(attach.error).toBeUndefined();
    } finally {
      flood.abort();
      await attach.disconnect();
      await direct.closeSession({ sessionId, force: true });
      await limited.close();
    }
  }, 60_000);
});

describe("repl origin CORS", () => {
  const page = "http://app.example.test:5173";
  let corsOrigin: Server;

  beforeAll(async () => {
    corsOrigin = await startReplOrigin({ port: 0, logger, proxy, shutdownGraceMs: 500, cors: { origins: [page] } });
  });

  afterAll(async () => {
    await corsOrigin?.close(500);
  });

  /** A Connect client over HTTP/1.1 as a page of `page` has it, recording the response headers it gets. */
  function fromPage<S extends DescService>(service: S, replId: string, seen: Headers[]) {
    const interceptors: Interceptor[] = [
      (next) => async (req) => {
        req.header.set("authorization", `Bearer ${userToken}`);
        req.header.set("origin", page);
        const res = await next(req);
        seen.push(res.header);
        return res;
      },
    ];
    return createClient(
      service,
      createConnectTransport({ baseUrl: `${corsOrigin.url}/${replId}`, httpVersion: "1.1", interceptors }),
    );
  }

  it("answers the preflight itself, without going to the runner", async () => {
    const res = await fetch(`${corsOrigin.url}/${unreachableReplId}/devex.runner.v1.FilesystemService/Stat`, {
      method: "OPTIONS",
      headers: {
        origin: page,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,connect-protocol-version,content-type",
      },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe(page);
    expect(res.headers.get("access-control-allow-headers")).toContain("Authorization");
    expect(res.headers.get("access-control-allow-credentials")).toBeNull();
  });

  it("adds the CORS headers to proxied unary calls, server streams and errors, and streams still flow", async () => {
    const seen: Headers[] = [];
    const fs = fromPage(FilesystemService, runner.replId, seen);
    expect((await fs.stat({ path: "." })).entry?.path).toBe(".");

    const text = await echoThroughBrowserForm(fromPage(TerminalService, runner.replId, seen), "cors");
    expect(text).toContain("cors-42");

    // Stat, CreateSession, StreamOutput, WriteInput, CloseSession: every response allows the page.
    expect(seen).toHaveLength(5);
    for (const header of seen) {
      expect(header.get("access-control-allow-origin")).toBe(page);
      expect(header.get("access-control-expose-headers")).toContain("Grpc-Status");
    }

    const unknown = await fetch(`${corsOrigin.url}/${newId("repl")}/devex.runner.v1.FilesystemService/Stat`, {
      method: "POST",
      headers: { origin: page, "content-type": "application/json", authorization: `Bearer ${userToken}` },
      body: '{"path":"."}',
    });
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get("access-control-allow-origin")).toBe(page);
  });

  it("adds nothing for other origins, nor on an origin without CORS", async () => {
    for (const [url, from] of [
      [corsOrigin.url, "https://evil.example"],
      [origin.url, page],
    ] as const) {
      const res = await fetch(`${url}/${runner.replId}/devex.runner.v1.FilesystemService/Stat`, {
        method: "POST",
        headers: { origin: from, "content-type": "application/json", authorization: `Bearer ${userToken}` },
        body: '{"path":"."}',
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("access-control-allow-origin")).toBeNull();
    }
  });
});
