import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type SpawnedService, spawnService } from "@devex/kit/testing";

/** A real core process (the bundle `npm run build` makes) on free ports, with its own data directory. */
export interface CoreProcess {
  /** Core's API. */
  url: string;
  /** The repl origin (`<replUrl>/<repl id>/...` reaches a repl's runner). */
  replUrl: string;
  dataDir: string;
  service: SpawnedService;
  /** The dev admin's API key, which `--dev-api-key` writes under the data directory. */
  devApiKey(): Promise<string>;
  /** A gRPC (h2c) client of a core service, authenticated with `apiKey` when given. */
  client<S extends DescService>(service: S, apiKey?: string): Client<S>;
  /** Stops core (SIGTERM by default) and resolves with its exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Removes the data directory. */
  cleanup(): Promise<void>;
}

/**
 * Starts core from its bundle with a fresh data directory (or `dataDir`), dev login and a dev
 * API key; `env` is added to its environment (`DEVEX_FAILPOINTS`, say).
 */
export async function startCoreProcess(
  extraArgs: string[] = [],
  dataDir?: string,
  nodeOptions: string[] = [],
  env: Record<string, string> = {},
): Promise<CoreProcess> {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), "devex-core-test-")));
  const service = await spawnService(
    "services/core/dist/main.js",
    [
      "--repl-port",
      "0",
      // Tests that use previews pass a free port of their own.
      ...(extraArgs.includes("--preview-port") ? [] : ["--preview-port", "0"]),
      "--data-dir",
      dir,
      "--dev-login",
      "--dev-api-key",
      "--log-level",
      "info",
      ...extraArgs,
    ],
    env,
    nodeOptions,
    "ready",
  );
  const replPort = Number(service.ready.replPort);
  return {
    url: service.url,
    replUrl: `http://127.0.0.1:${replPort}`,
    dataDir: dir,
    service,
    async devApiKey() {
      return (await readFile(join(dir, "dev-api-key"), "utf8")).trim();
    },
    client(descriptor, apiKey) {
      const interceptors: Interceptor[] = apiKey
        ? [
            (next) => (req) => {
              req.header.set("authorization", `Bearer ${apiKey}`);
              return next(req);
            },
          ]
        : [];
      return createClient(descriptor, createGrpcTransport({ baseUrl: service.url, interceptors }));
    },
    stop(signal) {
      return service.stop(signal);
    },
    async cleanup() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}
