import { rm } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  ArchiveCompression,
  ExportWorkspaceResponseSchema,
  type ImportWorkspaceRequest,
  ImportWorkspaceResponseSchema,
  type RunnerService,
  SkipReason,
} from "@devex/gen/devex/runner/v1/runner_pb.js";
import {
  ArchiveIntegrityError,
  IgnoreFileError,
  InvalidArchiveError,
  type ArchiveCompression as KitCompression,
  type SkipReason as KitSkipReason,
  packDirectory,
  readIgnoreFile,
  unpackArchive,
} from "@devex/kit";
import type { RunnerContext } from "./context.js";
import { quotePath } from "./filesystem/paths.js";
import { createStaging, swapIn } from "./workspace-swap.js";

/** What the workspace archive calls need from the rest of the runner. */
export interface WorkspaceArchiveOptions {
  ctx: RunnerContext;
  /** What runs in the workspace right now: an import needs it to be nothing. */
  running(): { sessions: number; processes: number };
  /** Called right after an import has put a new tree at the workspace's path. */
  onReplaced(): void;
}

/** RunnerService's ExportWorkspace and ImportWorkspace. */
export type WorkspaceArchiveImpl = Pick<ServiceImpl<typeof RunnerService>, "exportWorkspace" | "importWorkspace">;

const kitCompressions: Partial<Record<ArchiveCompression, KitCompression>> = {
  [ArchiveCompression.ZSTD]: "zstd",
  [ArchiveCompression.GZIP]: "gzip",
  [ArchiveCompression.NONE]: "none",
};

const skipReasons: Record<KitSkipReason, SkipReason> = {
  fifo: SkipReason.FIFO,
  socket: SkipReason.SOCKET,
  device: SkipReason.DEVICE,
  unreadable: SkipReason.UNREADABLE,
};

/**
 * Streams the workspace out as an archive and replaces it with one (see archive.ts in the
 * kit for how archives are made and checked). Neither counts as activity: core calls them,
 * not the repl's user. An import unpacks into a staging directory beside the workspace and
 * swaps it in only once it is complete and verified (see workspace-swap.ts); until then, and
 * after any failure, the workspace is untouched.
 */
export function createWorkspaceArchives(options: WorkspaceArchiveOptions): WorkspaceArchiveImpl {
  const { ctx } = options;
  let importing = false;

  /** FAILED_PRECONDITION after Shutdown, or while anything runs in the workspace. */
  const assertMayReplace = () => {
    if (ctx.draining.aborted) {
      throw new ConnectError(
        "the runner has been shut down: its workspace can no longer be replaced",
        Code.FailedPrecondition,
      );
    }
    const { sessions, processes } = options.running();
    if (sessions > 0 || processes > 0) {
      throw new ConnectError(
        `the workspace is in use (${sessions} terminal sessions and ${processes} processes running): end them first`,
        Code.FailedPrecondition,
      );
    }
  };

  return {
    async *exportWorkspace(req, hctx) {
      const compression =
        req.compression === ArchiveCompression.UNSPECIFIED ? ArchiveCompression.ZSTD : req.compression;
      const kitCompression = kitCompressions[compression];
      if (!kitCompression) throw new ConnectError(`compression ${compression} is not known`, Code.InvalidArgument);
      if (req.ignoreFile) await checkIgnoreFile(ctx.workspace, req.ignoreFile);
      const startedAt = new Date();
      const packed = packDirectory(ctx.workspace, {
        compression: kitCompression,
        ignoreFile: req.ignoreFile || undefined,
        exclude: req.exclude,
        signal: hctx.signal,
      });
      yield create(ExportWorkspaceResponseSchema, {
        kind: { case: "header", value: { compression, startedAt: timestampFromDate(startedAt) } },
      });
      try {
        for await (const chunk of packed.chunks) {
          yield create(ExportWorkspaceResponseSchema, { kind: { case: "chunk", value: chunk } });
        }
        const totals = await packed.totals;
        ctx.logger.info(
          { ...totals, durationMs: Date.now() - startedAt.getTime(), compression: kitCompression },
          "workspace exported",
        );
        yield create(ExportWorkspaceResponseSchema, {
          kind: {
            case: "trailer",
            value: {
              fileCount: BigInt(totals.fileCount),
              directoryCount: BigInt(totals.directoryCount),
              symlinkCount: BigInt(totals.symlinkCount),
              contentSizeBytes: BigInt(totals.contentBytes),
              archiveSizeBytes: BigInt(totals.archiveBytes),
              sha256: totals.sha256,
              skippedEntryCount: BigInt(totals.skippedCount),
              skippedEntries: totals.skipped.map(({ path, reason }) => ({ path, reason: skipReasons[reason] })),
            },
          },
        });
      } catch (error) {
        if (error instanceof ConnectError) throw error;
        if (hctx.signal.aborted)
          throw new ConnectError("the export was cancelled", Code.Canceled, undefined, undefined, error);
        throw new ConnectError(
          `cannot export the workspace: ${(error as Error).message}`,
          Code.Internal,
          undefined,
          undefined,
          error,
        );
      }
    },

    async importWorkspace(requests, hctx) {
      assertMayReplace();
      if (importing) throw new ConnectError("another import of the workspace is in progress", Code.Aborted);
      importing = true;
      const startedAt = Date.now();
      let staging: string | undefined;
      try {
        const messages = requests[Symbol.asyncIterator]();
        const first = await messages.next();
        if (first.done || first.value.kind.case !== "header") {
          throw new ConnectError("the first message must be the header", Code.InvalidArgument);
        }
        const header = first.value.kind.value;
        const compression = kitCompressions[header.compression];
        if (!compression) throw new ConnectError("header.compression is required", Code.InvalidArgument);
        staging = await createStaging(ctx.workspace);
        const totals = await unpackArchive(chunksOf(messages), staging, {
          compression,
          expectedSha256: header.sha256,
          expectedBytes: header.archiveSizeBytes === undefined ? undefined : Number(header.archiveSizeBytes),
          signal: hctx.signal,
        });
        // A session or process may have started, or Shutdown begun, while the archive arrived.
        assertMayReplace();
        await swapIn(ctx.workspace, staging, ctx.logger);
        staging = undefined;
        options.onReplaced();
        ctx.logger.info({ ...totals, durationMs: Date.now() - startedAt, compression }, "workspace imported");
        return create(ImportWorkspaceResponseSchema, {
          fileCount: BigInt(totals.fileCount),
          directoryCount: BigInt(totals.directoryCount),
          symlinkCount: BigInt(totals.symlinkCount),
          contentSizeBytes: BigInt(totals.contentBytes),
          archiveSizeBytes: BigInt(totals.archiveBytes),
        });
      } catch (error) {
        throw importError(error, hctx.signal);
      } finally {
        importing = false;
        if (staging) {
          await rm(staging, { recursive: true, force: true }).catch((error: unknown) =>
            ctx.logger.warn({ err: error, path: staging }, "cannot remove the staging directory of a failed import"),
          );
        }
      }
    },
  };
}

/** The archive chunks that follow the header; INVALID_ARGUMENT on a second header. */
async function* chunksOf(messages: AsyncIterator<ImportWorkspaceRequest>): AsyncGenerator<Uint8Array> {
  for (let next = await messages.next(); !next.done; next = await messages.next()) {
    const { kind } = next.value;
    if (kind.case === "header") throw new ConnectError("the header was sent twice", Code.InvalidArgument);
    if (kind.case === "chunk") yield kind.value;
  }
}

function importError(error: unknown, signal: AbortSignal): ConnectError {
  if (error instanceof ConnectError) return error;
  const message = (error as Error).message;
  if (signal.aborted) return new ConnectError("the import was cancelled", Code.Canceled, undefined, undefined, error);
  if (error instanceof ArchiveIntegrityError)
    return new ConnectError(message, Code.DataLoss, undefined, undefined, error);
  if (error instanceof InvalidArchiveError) {
    return new ConnectError(message, Code.InvalidArgument, undefined, undefined, error);
  }
  return new ConnectError(`cannot import the workspace: ${message}`, Code.Internal, undefined, undefined, error);
}

/** Refuses an ignore file outside the workspace (or not a file) with INVALID_ARGUMENT naming the field. */
async function checkIgnoreFile(workspace: string, ignoreFile: string): Promise<void> {
  try {
    await readIgnoreFile(workspace, ignoreFile);
  } catch (error) {
    if (!(error instanceof IgnoreFileError)) throw error;
    throw new ConnectError(`ignore_file ${quotePath(ignoreFile)} ${error.problem}`, Code.InvalidArgument);
  }
}
