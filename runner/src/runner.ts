import { mkdir, readFile, realpath } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import {
  GetStatusResponseSchema,
  RunnerService,
  RunnerState,
  ShutdownResponseSchema,
} from "@devex/gen/devex/runner/v1/runner_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { signRunnerToken } from "@devex/kit";
import { type CryptoKey, exportSPKI, generateKeyPair, importSPKI } from "jose";
import type { Logger } from "pino";
import { Activity } from "./activity.js";
import { createRunnerAuthInterceptor } from "./auth.js";
import type { RunnerConfig } from "./config.js";
import type { RunnerContext } from "./context.js";
import { createFilesystemService } from "./filesystem/service.js";
import { createProcessService } from "./process/service.js";
import { createTerminalService } from "./terminal/service.js";
import { runnerVersion } from "./version.js";
import { createWorkspaceArchives } from "./workspace-archive.js";
import { recoverInterruptedImport } from "./workspace-swap.js";

/** A runner assembled from its configuration, ready to be served. */
export interface Runner {
  context: RunnerContext;
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
  /** Drains (as RunnerService.Shutdown does) with the given grace period. */
  shutdown(graceMs: number, reason: string): Promise<void>;
}

/** Tokens printed in development mode. */
export interface DevCredentials {
  replId: string;
  publicKeyPem: string;
  userToken: string;
  coreToken: string;
}

/**
 * Builds the runner's services for one workspace. In development mode it makes its own
 * key pair and reports tokens it accepts through `onDevCredentials`.
 */
export async function createRunner(
  config: RunnerConfig,
  logger: Logger,
  onDevCredentials?: (credentials: DevCredentials) => void,
): Promise<Runner> {
  await recoverInterruptedImport(config.workspace, logger);
  await mkdir(config.workspace, { recursive: true });
  const workspace = await realpath(config.workspace);
  const { publicKey, replId } = await resolveIdentity(config, onDevCredentials);
  const draining = new AbortController();
  const context: RunnerContext = {
    config,
    workspace,
    replId,
    activity: new Activity(),
    logger,
    draining: draining.signal,
  };
  const terminal = createTerminalService(context);
  const filesystem = createFilesystemService(context);
  const processes = createProcessService(context);
  const archives = createWorkspaceArchives({
    ctx: context,
    running: () => ({ sessions: terminal.running(), processes: processes.running() }),
    onReplaced: () => filesystem.workspaceReplaced(),
  });
  const startedAt = new Date();
  let state = RunnerState.SERVING;
  let drained: Promise<{ sessions: number; processes: number; killed: number }> | undefined;

  const drain = (graceMs: number, reason: string) => {
    drained ??= (async () => {
      logger.info({ graceMs, reason }, "draining");
      state = RunnerState.DRAINING;
      draining.abort();
      const [sessions, procs] = await Promise.all([terminal.shutdown(graceMs), processes.shutdown(graceMs)]);
      await filesystem.close();
      state = RunnerState.DRAINED;
      return { sessions: sessions.closed, processes: procs.stopped, killed: sessions.killed + procs.killed };
    })();
    return drained;
  };

  const routes = (router: ConnectRouter) => {
    router.service(TerminalService, terminal.impl);
    router.service(FilesystemService, filesystem.impl);
    router.service(ProcessService, processes.impl);
    router.service(RunnerService, {
      getStatus() {
        const { activity } = context;
        const lastActivityAt = activity.lastActivityAt;
        return create(GetStatusResponseSchema, {
          version: runnerVersion,
          replId,
          state,
          startedAt: timestampFromDate(startedAt),
          uptimeMs: BigInt(Date.now() - startedAt.getTime()),
          attachedClients: activity.attachedClients,
          sessionCount: terminal.count(),
          runningProcessCount: processes.running(),
          lastActivityAt: timestampFromDate(lastActivityAt),
          idleSince: activity.attachedClients > 0 ? undefined : timestampFromDate(lastActivityAt),
          workspacePath: workspace,
        });
      },
      ...archives,
      async shutdown(req) {
        const result = await drain(req.gracePeriodMs || 10_000, req.reason || "requested");
        return create(ShutdownResponseSchema, {
          sessionsClosed: result.sessions,
          processesStopped: result.processes,
          killedAfterGrace: result.killed,
          drainedAt: timestampFromDate(new Date()),
        });
      },
    });
  };

  return {
    context,
    routes,
    interceptors: [createRunnerAuthInterceptor(publicKey, replId)],
    async shutdown(graceMs, reason) {
      await drain(graceMs, reason);
    },
  };
}

async function resolveIdentity(
  config: RunnerConfig,
  onDevCredentials?: (credentials: DevCredentials) => void,
): Promise<{ publicKey: CryptoKey; replId: string }> {
  if (config.dev) {
    const replId = config.replId ?? randomReplId();
    const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    const ttlMs = 24 * 3_600_000;
    onDevCredentials?.({
      replId,
      publicKeyPem: await exportSPKI(publicKey),
      userToken: await signRunnerToken(privateKey, { replId, userId: "usr_dev", role: "user", ttlMs }),
      coreToken: await signRunnerToken(privateKey, { replId, userId: "usr_dev", role: "core", ttlMs }),
    });
    return { publicKey, replId };
  }
  if (!config.replId || !config.tokenPublicKey) {
    throw new Error("--repl-id and --token-public-key are required unless --dev is given (see --help)");
  }
  const pem = config.tokenPublicKey.startsWith("-----BEGIN")
    ? config.tokenPublicKey
    : await readFile(config.tokenPublicKey, "utf8");
  return { publicKey: await importSPKI(pem, "EdDSA"), replId: config.replId };
}

function randomReplId(): string {
  const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz";
  const bytes = crypto.getRandomValues(new Uint8Array(26));
  return `repl_${Array.from(bytes, (b) => alphabet[b % 36]).join("")}`;
}
