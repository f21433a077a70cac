import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, type Http2SessionManager } from "@connectrpc/connect-node";
import {
  ArchiveCompression,
  type ImportWorkspaceRequest,
  ImportWorkspaceRequestSchema,
  RunnerService,
  ShutdownRequestSchema,
  SkipReason,
} from "@devex/gen/devex/runner/v1/runner_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@devex/gen/grpc/health/v1/health_pb.js";
import {
  type ArchiveTotals,
  endpointConnection,
  type SkipReason as PackSkipReason,
  signRunnerToken,
  WideWindowSessionManager,
} from "@devex/kit";
import type { RunnerInstance } from "./orchestrator.js";
import { runnerGoneInterceptor } from "./runner-gone.js";
import type { TokenKeys } from "./token-keys.js";

/** What a runner reports about itself (RunnerService.GetStatus), after core checked that it is the right runner. */
export interface RunnerStatus {
  replId: string;
  /** Open Attach, StreamOutput and process streams right now. */
  attachedClients: number;
  sessionCount: number;
  runningProcessCount: number;
  /** Terminal sessions whose shell is running a command in the foreground right now (0 from a runner too old to report it). */
  busySessionCount: number;
  /** The last activity (input, output, attach or detach), in ms since the epoch; 0 if none was reported. */
  lastActivityAtMs: number;
  /** Since when the runner has been idle, in ms since the epoch; unset while a client is attached. */
  idleSinceMs?: number;
  /** The runner's version. */
  version: string;
}

/** The part of a {@link RunnerInstance} a call needs: which repl, and where its runner is. */
export type RunnerTarget = Pick<RunnerInstance, "replId" | "endpoint">;

/** Options for {@link RunnerCaller.shutdown}. */
export interface RunnerShutdownOptions {
  /** How long sessions and processes get after SIGHUP/SIGTERM, in ms (the runner caps it at 300000). Default 10000. */
  graceMs?: number;
  /** Why, for the runner's log and its clients' exit events. Default "stopped by core". */
  reason?: string;
  signal?: AbortSignal;
}

/** Options for {@link RunnerCaller.exportWorkspace}. */
export interface RunnerExportOptions {
  /** A gitignore-syntax file in the workspace whose patterns leave paths out (e.g. ".devexignore"). */
  ignoreFile?: string;
  signal?: AbortSignal;
}

/** The totals a runner reports at the end of an export (ExportTrailer), or of an import. */
export type ArchiveReport = ArchiveTotals;

/** An entry of the workspace an export left out, and why ("unknown": a reason newer than this core). */
export interface SkippedEntry {
  /** Relative to the workspace root, "/"-separated. */
  path: string;
  reason: PackSkipReason | "unknown";
}

/** What a runner reports at the end of an export: the archive's totals and the entries it left out. */
export interface ExportReport extends ArchiveReport {
  /** How many entries the archive left out (ignored paths not counted). */
  skippedCount: number;
  /** The first of them (at most 10). */
  skipped: SkippedEntry[];
}

const skipReasons: Partial<Record<SkipReason, PackSkipReason>> = {
  [SkipReason.FIFO]: "fifo",
  [SkipReason.SOCKET]: "socket",
  [SkipReason.DEVICE]: "device",
  [SkipReason.UNREADABLE]: "unreadable",
};

/** A workspace export in progress: read `chunks` to the end, then `report` holds the runner's totals. */
export interface RunnerExport {
  /** The zstd-compressed tar archive, in order. Throws if the stream ends without its trailer. */
  chunks: AsyncIterable<Uint8Array>;
  /** Resolves once `chunks` has been read to the end with the trailer; rejects if the export failed. */
  report: Promise<ExportReport>;
  /** When the runner started the export, in ms since the epoch (known once the first chunk is read). */
  startedAtMs(): number;
}

/** What {@link RunnerCaller.importWorkspace} checks the archive against. */
export interface RunnerImportOptions {
  /** The SHA-256 the archive must hash to (lowercase hex); the runner refuses anything else with DATA_LOSS. */
  sha256: string;
  /** The archive's size in bytes. */
  archiveBytes: number;
  signal?: AbortSignal;
}

/** Core's calls to runners (RunnerService and health), authenticated with core-role tokens. */
export interface RunnerCaller {
  /**
   * The runner's status. Throws FailedPrecondition when the runner at the endpoint serves
   * another repl than `target.replId`: nothing it says is trusted without that check.
   */
  status(target: RunnerTarget, signal?: AbortSignal): Promise<RunnerStatus>;
  /**
   * Hands the standby runner at `standby.endpoint` (whose standby id is `standby.replId`, the
   * audience of the core token it accepts) the repl `replId`.
   */
  assign(standby: RunnerTarget, replId: string, signal?: AbortSignal): Promise<void>;
  /** Whether `grpc.health.v1.Health/Check` at the endpoint answers SERVING; false on any failure. */
  health(endpoint: string, signal?: AbortSignal): Promise<boolean>;
  /** Drains the runner (RunnerService.Shutdown); resolves when its sessions and processes have ended. */
  shutdown(target: RunnerTarget, options?: RunnerShutdownOptions): Promise<void>;
  /**
   * Undoes a drain (RunnerService.Resume) when the save that followed it failed: the runner
   * takes new work again. Resolves with whether it had been drained.
   */
  resume(target: RunnerTarget, reason: string, signal?: AbortSignal): Promise<boolean>;
  /**
   * Streams the workspace out of the runner as a zstd tar archive (RunnerService.ExportWorkspace).
   * Nothing is buffered beyond what the reader has not consumed yet.
   */
  exportWorkspace(target: RunnerTarget, options?: RunnerExportOptions): RunnerExport;
  /**
   * Replaces the workspace with a zstd tar archive (RunnerService.ImportWorkspace); the runner
   * swaps it in only once every byte matches `sha256`.
   */
  importWorkspace(
    target: RunnerTarget,
    archive: AsyncIterable<Uint8Array>,
    options: RunnerImportOptions,
  ): Promise<ArchiveReport>;
  /** Drops the connection and cached token of a runner that is gone. */
  forget(target: RunnerTarget): void;
  /** Closes every connection. */
  close(): void;
}

/** Options for {@link createRunnerCaller}. */
export interface RunnerCallerOptions {
  /** The deadline of each status and health call, in ms. Default 5000. */
  callTimeoutMs?: number;
  /** The lifetime of the core-role tokens minted for the calls, in ms. Default 300000 (5 minutes). */
  tokenTtlMs?: number;
}

/** The largest chunk sent to ImportWorkspace (the runner's limit is 4 MiB). */
const importChunkBytes = 1024 * 1024;

/**
 * What core lets a runner send on one stream, and on its connection, before core reads:
 * archives stream from runners as 64 KiB messages, which HTTP/2's default 64 KiB windows
 * would hold back to one WINDOW_UPDATE round trip each. The stream window bounds what core
 * holds per export.
 */
const streamWindowBytes = 1024 * 1024;
const connectionWindowBytes = 8 * 1024 * 1024;

/** Core's own identity in the tokens it mints for itself. */
const coreUserId = "core";
/** A cached token is replaced once less than this is left of its lifetime. */
const tokenRenewBeforeMs = 60_000;

/**
 * Creates core's client for runners: gRPC over h2c, one HTTP/2 connection per runner
 * endpoint, and a core-role token per repl minted on demand and reused until shortly
 * before it expires.
 */
export function createRunnerCaller(tokenKeys: TokenKeys, options: RunnerCallerOptions = {}): RunnerCaller {
  const callTimeoutMs = options.callTimeoutMs ?? 5_000;
  const tokenTtlMs = Math.max(options.tokenTtlMs ?? 300_000, 2 * tokenRenewBeforeMs);
  const sessions = new Map<string, Http2SessionManager>();
  const tokens = new Map<string, { token: Promise<string>; expiresAtMs: number }>();

  const tokenFor = (replId: string): Promise<string> => {
    const now = Date.now();
    const cached = tokens.get(replId);
    if (cached && cached.expiresAtMs - now > tokenRenewBeforeMs) return cached.token;
    for (const [id, entry] of tokens) if (entry.expiresAtMs <= now) tokens.delete(id);
    const token = signRunnerToken(tokenKeys.privateKey, {
      replId,
      userId: coreUserId,
      role: "core",
      ttlMs: tokenTtlMs,
    });
    tokens.set(replId, { token, expiresAtMs: now + tokenTtlMs });
    token.catch(() => tokens.delete(replId));
    return token;
  };

  const transportFor = (endpoint: string, replId?: string) => {
    let sessionManager = sessions.get(endpoint);
    if (!sessionManager) {
      sessionManager = new WideWindowSessionManager(endpoint, {
        streamWindowBytes,
        connectionWindowBytes,
        idleConnectionTimeoutMs: 60_000,
      });
      sessions.set(endpoint, sessionManager);
    }
    const auth: Interceptor = (next) => async (req) => {
      if (replId !== undefined) req.header.set("authorization", `Bearer ${await tokenFor(replId)}`);
      return next(req);
    };
    return createGrpcTransport({
      baseUrl: endpointConnection(endpoint).origin,
      sessionManager,
      interceptors: [auth, runnerGoneInterceptor],
    });
  };

  return {
    async status(target, signal) {
      const client = createClient(RunnerService, transportFor(target.endpoint, target.replId));
      const res = await client.getStatus({}, { signal, timeoutMs: callTimeoutMs });
      if (res.replId !== target.replId) {
        throw new ConnectError(
          `the runner at ${target.endpoint} serves ${res.replId || "no repl"}, not ${target.replId}`,
          Code.FailedPrecondition,
        );
      }
      return {
        replId: res.replId,
        attachedClients: res.attachedClients,
        sessionCount: res.sessionCount,
        runningProcessCount: res.runningProcessCount,
        busySessionCount: res.busySessionCount,
        lastActivityAtMs: res.lastActivityAt ? timestampMs(res.lastActivityAt) : 0,
        ...(res.idleSince ? { idleSinceMs: timestampMs(res.idleSince) } : {}),
        version: res.version,
      };
    },
    async assign(standby, replId, signal) {
      const client = createClient(RunnerService, transportFor(standby.endpoint, standby.replId));
      const res = await client.assign({ replId }, { signal, timeoutMs: callTimeoutMs });
      if (res.replId !== replId) {
        throw new ConnectError(`the standby at ${standby.endpoint} took ${res.replId}, not ${replId}`, Code.Internal);
      }
      // From now on the runner checks tokens against the repl id: the standby's are useless.
      tokens.delete(standby.replId);
    },
    async health(endpoint, signal) {
      try {
        const res = await createClient(Health, transportFor(endpoint)).check({}, { signal, timeoutMs: callTimeoutMs });
        return res.status === HealthCheckResponse_ServingStatus.SERVING;
      } catch {
        return false;
      }
    },
    async shutdown(target, shutdownOptions = {}) {
      const graceMs = Math.min(Math.max(Math.round(shutdownOptions.graceMs ?? 10_000), 0), 300_000);
      const client = createClient(RunnerService, transportFor(target.endpoint, target.replId));
      const request = create(ShutdownRequestSchema, {
        // 0 would mean the runner's default of 10 s: the shortest grace it takes is 1 ms.
        gracePeriodMs: Math.max(graceMs, 1),
        reason: shutdownOptions.reason ?? "stopped by core",
      });
      await client.shutdown(request, { signal: shutdownOptions.signal, timeoutMs: graceMs + callTimeoutMs });
    },
    async resume(target, reason, signal) {
      const client = createClient(RunnerService, transportFor(target.endpoint, target.replId));
      const res = await client.resume({ reason }, { signal, timeoutMs: callTimeoutMs });
      return res.wasDrained;
    },
    exportWorkspace(target, exportOptions = {}) {
      const client = createClient(RunnerService, transportFor(target.endpoint, target.replId));
      let startedAtMs = 0;
      let settle!: { resolve(report: ExportReport): void; reject(error: unknown): void };
      const report = new Promise<ExportReport>((resolve, reject) => {
        settle = { resolve, reject };
      });
      report.catch(() => {});
      async function* chunks(): AsyncGenerator<Uint8Array> {
        try {
          const stream = client.exportWorkspace(
            { compression: ArchiveCompression.ZSTD, ignoreFile: exportOptions.ignoreFile ?? "" },
            { signal: exportOptions.signal },
          );
          for await (const message of stream) {
            const { kind } = message;
            if (kind.case === "header") {
              startedAtMs = kind.value.startedAt ? timestampMs(kind.value.startedAt) : Date.now();
              if (kind.value.compression !== ArchiveCompression.ZSTD) {
                throw new ConnectError("the runner exported an archive that is not zstd", Code.Internal);
              }
            } else if (kind.case === "chunk") {
              yield kind.value;
            } else if (kind.case === "trailer") {
              const trailer = kind.value;
              settle.resolve({
                fileCount: Number(trailer.fileCount),
                directoryCount: Number(trailer.directoryCount),
                symlinkCount: Number(trailer.symlinkCount),
                contentBytes: Number(trailer.contentSizeBytes),
                archiveBytes: Number(trailer.archiveSizeBytes),
                sha256: trailer.sha256,
                skippedCount: Number(trailer.skippedEntryCount),
                skipped: trailer.skippedEntries.map(({ path, reason }) => ({
                  path,
                  reason: skipReasons[reason] ?? "unknown",
                })),
              });
              return;
            }
          }
          throw new ConnectError(
            "the runner's export ended without its trailer: the archive is incomplete",
            Code.DataLoss,
          );
        } catch (error) {
          settle.reject(error);
          throw error;
        } finally {
          settle.reject(new ConnectError("the export was not read to the end", Code.Aborted));
        }
      }
      return { chunks: chunks(), report, startedAtMs: () => startedAtMs };
    },
    async importWorkspace(target, archive, importOptions) {
      const client = createClient(RunnerService, transportFor(target.endpoint, target.replId));
      async function* requests(): AsyncGenerator<ImportWorkspaceRequest> {
        yield create(ImportWorkspaceRequestSchema, {
          kind: {
            case: "header",
            value: {
              compression: ArchiveCompression.ZSTD,
              sha256: importOptions.sha256,
              archiveSizeBytes: BigInt(importOptions.archiveBytes),
            },
          },
        });
        for await (const chunk of archive) {
          // The runner takes chunks of at most 4 MiB.
          for (let at = 0; at < chunk.byteLength; at += importChunkBytes) {
            yield create(ImportWorkspaceRequestSchema, {
              kind: { case: "chunk", value: chunk.subarray(at, at + importChunkBytes) },
            });
          }
        }
      }
      const res = await client.importWorkspace(requests(), { signal: importOptions.signal });
      return {
        fileCount: Number(res.fileCount),
        directoryCount: Number(res.directoryCount),
        symlinkCount: Number(res.symlinkCount),
        contentBytes: Number(res.contentSizeBytes),
        archiveBytes: Number(res.archiveSizeBytes),
        sha256: importOptions.sha256,
      };
    },
    forget(target) {
      sessions.get(target.endpoint)?.abort();
      sessions.delete(target.endpoint);
      tokens.delete(target.replId);
    },
    close() {
      for (const sessionManager of sessions.values()) sessionManager.abort();
      sessions.clear();
      tokens.clear();
    },
  };
}
