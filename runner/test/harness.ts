import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger, loadConfig, type Server, signRunnerToken, startServer } from "@devex/kit";
import { type CryptoKey, exportSPKI, generateKeyPair } from "jose";
import { type RunnerConfig, runnerSettings } from "../src/config.js";
import { createRunner, type Runner } from "../src/runner.js";

/** A real runner on a free port, with a fresh workspace and its own signing key. */
export interface TestRunner {
  url: string;
  replId: string;
  /** The workspace root (real path). */
  workspace: string;
  config: RunnerConfig;
  runner: Runner;
  server: Server;
  privateKey: CryptoKey;
  /** A token for this runner's repl. */
  token(role?: "user" | "core", ttlMs?: number): Promise<string>;
  /** A client over gRPC on h2c (default) or Connect on HTTP/1.1, authenticated as `role`. */
  client<S extends DescService>(
    service: S,
    options?: { protocol?: "grpc" | "connect-h1"; role?: "user" | "core" },
  ): Promise<Client<S>>;
  /** Stops the server and removes the workspace. */
  close(): Promise<void>;
}

/** Starts a runner for a test; `argv` takes runner flags (`--scrollback-bytes`, ...). */
export async function startTestRunner(argv: string[] = []): Promise<TestRunner> {
  const root = await mkdtemp(join(tmpdir(), "devex-runner-test-"));
  await mkdir(join(root, "home"));
  const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  const replId = `repl_${"t".repeat(10)}${Math.random().toString(36).slice(2, 18).padEnd(16, "0")}`;
  const config = loadConfig(runnerSettings, {
    argv: [
      "--port",
      "0",
      "--workspace",
      join(root, "workspace"),
      // Login shells read HOME's profile; tests keep the machine's own profile out of it.
      "--home",
      join(root, "home"),
      "--repl-id",
      replId,
      `--token-public-key=${await exportSPKI(publicKey)}`,
      ...argv,
    ],
    env: {},
  });
  const logger = createLogger({ service: "runner", level: process.env.DEVEX_TEST_LOG_LEVEL ?? "silent" });
  const runner = await createRunner(config, logger);
  const server = await startServer({
    name: "runner",
    logger,
    port: 0,
    routes: runner.routes,
    interceptors: runner.interceptors,
    shutdownGraceMs: 1_000,
    // As the runner's main does: flow control and throughput are tested on uncompressed streams.
    compression: false,
  });
  const token = (role: "user" | "core" = "user", ttlMs = 60_000) =>
    signRunnerToken(privateKey, { replId, userId: "usr_test", role, ttlMs });
  return {
    url: server.url,
    replId,
    workspace: runner.context.workspace,
    config,
    runner,
    server,
    privateKey,
    token,
    async client(service, options = {}) {
      const bearer = await token(options.role ?? "user", 3_600_000);
      const auth: Interceptor = (next) => (req) => {
        req.header.set("authorization", `Bearer ${bearer}`);
        return next(req);
      };
      const transport: Transport =
        options.protocol === "connect-h1"
          ? createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors: [auth] })
          : createGrpcTransport({ baseUrl: server.url, interceptors: [auth] });
      return createClient(service, transport);
    },
    async close() {
      await runner.shutdown(500, "test over");
      await server.close(500);
      await rm(root, { recursive: true, force: true });
    },
  };
}

export { codeOf } from "@devex/kit/testing";
