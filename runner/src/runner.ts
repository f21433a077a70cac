import { mkdir, readFile, realpath } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import {
  AssignResponseSchema,
  GetStatusResponseSchema,
  ResumeResponseSchema,
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
import { assertAcceptingWork, type RunnerContext } from "./context.js";
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

/** Hooks of {@link createRunner}. */
export interface CreateRunnerOptions {
  /** In development mode, receives the tokens the runner accepts. */
  onDevCredentials?: (credentials: DevCredentials) => void;
  /** A standby's Assign has given it its repl (called once). */
  onAssigned?: (replId: string) => void;
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
 *
 * A standby (`--standby`) is built whole too, with no repl: its auth interceptor lets
 * nothing but Assign through until Assign names the repl (see createRunnerAuthInterceptor),
 * and from then on the same services, on the same server, serve that repl. This is simpler
 * than swapping the router behind the server (connect-node fixes an adapter's routes when
 * it is made, so a swap would take a second adapter and a hand-over inside the server kit),
 * and costs nothing: the services hold no sessions, processes or watches until called, and
 * their workspace and home are the sandbox's fixed paths, known at start.
 */
export async function createRunner(
  config: RunnerConfig,
  logger: Logger,
  options: CreateRunnerOptions = {},
): Promise<Runner> {
  await recoverInterruptedImport(config.workspace, logger);
  await mkdir(config.workspace, { recursive: true });
  const workspace = await realpath(config.workspace);
  const { publicKey, replId } = await resolveIdentity(config, options.onDevCredentials);
  let draining = new AbortController();
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

  /** Undoes a drain (RunnerService.Resume): new work is accepted again; what the drain ended stays ended. */
  const resume = async (reason: string): Promise<boolean> => {
    if (!drained) return false;
    await drained;
    draining = new AbortController();
    context.draining = draining.signal;
    drained = undefined;
    state = RunnerState.SERVING;
    logger.info({ reason }, "resumed after a drain");
    return true;
  };

  const routes = (router: ConnectRouter) => {
    router.service(TerminalService, terminal.impl);
    router.service(FilesystemService, filesystem.impl);
    router.service(ProcessService, processes.impl);
    router.service(RunnerService, {
      async getStatus() {
        const { activity } = context;
        const busySessionCount = await terminal.busy();
        const lastActivityAt = activity.lastActivityAt;
        return create(GetStatusResponseSchema, {
          version: runnerVersion,
          replId: context.replId,
          state,
          startedAt: timestampFromDate(startedAt),
          uptimeMs: BigInt(Date.now() - startedAt.getTime()),
          attachedClients: activity.attachedClients,
          sessionCount: terminal.count(),
          runningProcessCount: processes.running(),
          busySessionCount,
          lastActivityAt: timestampFromDate(lastActivityAt),
          idleSince: activity.attachedClients > 0 ? undefined : timestampFromDate(lastActivityAt),
          workspacePath: workspace,
        });
      },
      ...archives,
      assign(req) {
        if (!config.standby) {
          throw new ConnectError(
            `this runner is not a standby: it was started for ${context.replId}`,
            Code.FailedPrecondition,
          );
        }
        if (context.replId !== "" && context.replId !== req.replId) {
          throw new ConnectError(`this standby is already assigned to ${context.replId}`, Code.FailedPrecondition);
        }
        if (context.replId === "") {
          assertAcceptingWork(context);
          context.replId = req.replId;
          logger.info({ replId: req.replId, standbyId: config.standbyId }, "assigned");
          options.onAssigned?.(req.replId);
        }
        return create(AssignResponseSchema, { replId: context.replId });
      },
      async resume(req) {
        return create(ResumeResponseSchema, { wasDrained: await resume(req.reason || "requested") });
      },
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
    interceptors: [
      createRunnerAuthInterceptor(publicKey, {
        get replId() {
          return context.replId || undefined;
        },
        standbyId: config.standby ? config.standbyId : undefined,
      }),
    ],
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
  // A standby learns its repl from Assign.
  const replId = config.standby ? "" : config.replId;
  if (replId === undefined || !config.tokenPublicKey) {
    throw new Error("--repl-id and --token-public-key are required unless --dev is given (see --help)");
  }
  const pem = config.tokenPublicKey.startsWith("-----BEGIN")
    ? config.tokenPublicKey
    : await readFile(config.tokenPublicKey, "utf8");
  return { publicKey: await importSPKI(pem, "EdDSA"), replId };
}

function randomReplId(): string {
  const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz";
  const bytes = crypto.getRandomValues(new Uint8Array(26));
  return `repl_${Array.from(bytes, (b) => alphabet[b % 36]).join("")}`;
}
