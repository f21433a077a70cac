import type { BigIntStats } from "node:fs";
import { mkdir, rename, rmdir, unlink } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  CopyResponseSchema,
  type FilesystemService,
  MakeDirectoryResponseSchema,
  MoveResponseSchema,
  RemoveResponseSchema,
  StatResponseSchema,
  WriteFileResponseSchema,
} from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { assertAcceptingWork, type RunnerContext } from "../context.js";
import { appendToFile, checkWriteTarget, PendingFile, type WriteCondition } from "./atomic-write.js";
import { type CopyTally, copyEntry } from "./copy.js";
import { describeEntry, entryFromStats } from "./entry.js";
import { errnoOf, pathError, toConnectError } from "./errors.js";
import { listDirectory, PageTokens } from "./listing.js";
import { isSameOrBelow } from "./paths.js";
import { readFileRange } from "./read.js";
import { removeTree } from "./remove.js";
import { chmodDirectory, type Located, Resolver } from "./resolver.js";
import { download, upload } from "./transfer.js";
import { startWatch, type Watch } from "./watch.js";

/** The filesystem of one workspace, confined to it. */
export interface FilesystemPart {
  impl: Partial<ServiceImpl<typeof FilesystemService>>;
  /**
   * Takes a new directory at the workspace path (an import swapped it in): paths resolve in
   * it from now on, and watches, which watch the old tree, end with ABORTED.
   */
  workspaceReplaced(): void;
  /** Ends every watch. */
  close(): Promise<void>;
}

/**
 * Creates the FilesystemService implementation for a runner: every path goes through one
 * {@link Resolver}, which keeps it inside the workspace (see resolver.ts for how), and every
 * change to the workspace first checks that the runner is still accepting work and counts
 * as user activity.
 */
export function createFilesystemService(ctx: RunnerContext): FilesystemPart {
  const resolver = new Resolver(ctx.workspace);
  const tokens = new PageTokens();
  const watches = new Set<Watch>();
  /** Watch calls open now, starting ones included; at most `config.maxWatches`. */
  let openWatches = 0;

  /** Runs a handler, turning a stray filesystem error into a Connect error that names the path. */
  const guard = async <T>(path: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (error) {
      throw toConnectError(error, path);
    }
  };

  /**
   * Resolves the source (without following a symlink there) and, once it is known to exist
   * and not to be the root, the destination (so that a failed call creates no parents), and
   * releases both afterwards.
   */
  const withBoth = async <T>(
    source: string,
    destination: string,
    createParents: boolean,
    fn: (src: Located & { stats: BigIntStats }, dst: Located) => Promise<T>,
  ): Promise<T> =>
    resolver.with(source, {}, async (src) => {
      if (src.isRoot) throw pathError(Code.FailedPrecondition, source, "is the workspace root");
      const { stats } = src;
      if (!stats) throw pathError(Code.NotFound, source, "does not exist");
      return resolver.with(destination, { createParents }, (dst) => fn({ ...src, stats }, dst));
    });

  const impl: ServiceImpl<typeof FilesystemService> = {
    stat: (req) =>
      guard(req.path, () =>
        resolver.with(req.path, { follow: req.followSymlinks }, async (located) => {
          if (!located.stats) throw pathError(Code.NotFound, req.path, "does not exist");
          return create(StatResponseSchema, { entry: await describeEntry(resolver, located, located.stats) });
        }),
      ),

    listDirectory: (req) => guard(req.path, () => listDirectory(resolver, tokens, req)),

    readFile: (req) => guard(req.path, () => readFileRange(resolver, req)),

    writeFile: (req) =>
      guard(req.path, async () => {
        assertAcceptingWork(ctx);
        const condition = req.condition as WriteCondition;
        const mustNotExist = condition.case === "mustNotExist" && condition.value;
        if (req.append) {
          if (mustNotExist || req.mode !== 0) {
            throw new ConnectError("append cannot be combined with must_not_exist or a mode", Code.InvalidArgument);
          }
          return resolver.with(req.path, { follow: true }, async (target) => {
            const stats = await appendToFile(target, req.content, condition);
            ctx.activity.touch();
            return create(WriteFileResponseSchema, {
              entry: entryFromStats(target.rel, target.name, stats),
              created: false,
            });
          });
        }
        // must_not_exist refuses a symlink at the path; otherwise a symlink's target is written.
        return resolver.with(req.path, { follow: !mustNotExist, createParents: req.createParents }, async (target) => {
          checkWriteTarget(target, target.stats, condition);
          const pending = await PendingFile.create(target, req.mode);
          try {
            await pending.write(req.content);
          } catch (error) {
            await pending.abort();
            throw error;
          }
          const { created, stats } = await pending.commit(condition);
          ctx.activity.touch();
          return create(WriteFileResponseSchema, { entry: entryFromStats(target.rel, target.name, stats), created });
        });
      }),

    makeDirectory: (req) =>
      guard(req.path, async () => {
        assertAcceptingWork(ctx);
        return resolver.with(req.path, { createParents: req.parents }, async (target) => {
          const existing = async () => {
            const stats = target.stats;
            if (req.parents && stats?.isDirectory()) {
              return create(MakeDirectoryResponseSchema, {
                entry: entryFromStats(target.rel, target.name, stats),
                created: false,
              });
            }
            throw pathError(Code.AlreadyExists, req.path, "already exists");
          };
          if (target.stats) return existing();
          try {
            await mkdir(target.path, req.mode || 0o755);
          } catch (error) {
            if (errnoOf(error) !== "EEXIST") throw error;
            target.stats = await resolver.with(req.path, {}, async (again) => again.stats);
            return existing();
          }
          // An explicit mode is exact; the default is 0755 less the umask, as mkdir(2) applies it.
          if (req.mode) await chmodDirectory(target.path, req.mode);
          ctx.activity.touch();
          return resolver.with(req.path, {}, async (made) =>
            create(MakeDirectoryResponseSchema, {
              entry: made.stats && entryFromStats(made.rel, made.name, made.stats),
              created: true,
            }),
          );
        });
      }),

    move: (req) =>
      guard(req.sourcePath, async () => {
        assertAcceptingWork(ctx);
        return withBoth(req.sourcePath, req.destinationPath, req.createParents, async (src, dst) => {
          const isDirectory = src.stats.isDirectory();
          const srcReal = await resolver.realPathOf(src);
          const dstReal = await resolver.realPathOf(dst);
          checkDestination(src, dst, req.overwrite);
          if (isDirectory && isSameOrBelow(dstReal, srcReal)) {
            throw pathError(Code.FailedPrecondition, req.destinationPath, "is inside the directory being moved");
          }
          if (dstReal !== srcReal) {
            try {
              await rename(src.path, dst.path);
            } catch (error) {
              throw toConnectError(error, errnoOf(error) === "ENOENT" ? req.sourcePath : req.destinationPath);
            }
          }
          ctx.activity.touch();
          return resolver.with(req.destinationPath, {}, async (moved) => {
            if (!moved.stats) throw pathError(Code.Aborted, req.destinationPath, "vanished right after the move");
            return create(MoveResponseSchema, { entry: await describeEntry(resolver, moved, moved.stats) });
          });
        });
      }),

    copy: (req) =>
      guard(req.sourcePath, async () => {
        assertAcceptingWork(ctx);
        return withBoth(req.sourcePath, req.destinationPath, req.createParents, async (src, dst) => {
          const isDirectory = src.stats.isDirectory();
          if (isDirectory && !req.recursive) {
            throw pathError(Code.FailedPrecondition, req.sourcePath, "is a directory: set recursive to copy it");
          }
          checkDestination(src, dst, req.overwrite);
          const srcReal = await resolver.realPathOf(src);
          const dstReal = await resolver.realPathOf(dst);
          if (isDirectory && isSameOrBelow(dstReal, srcReal)) {
            throw pathError(Code.FailedPrecondition, req.destinationPath, "is inside the directory being copied");
          }
          if (dstReal === srcReal) {
            throw pathError(Code.FailedPrecondition, req.destinationPath, "is the source itself");
          }
          const tally: CopyTally = { files: 0, bytes: 0 };
          try {
            await copyEntry(src.dir, src.name, dst.dir, dst.name, req.destinationPath, true, tally);
          } catch (error) {
            throw toConnectError(error, errnoOf(error) === "ENOENT" ? req.sourcePath : req.destinationPath);
          }
          ctx.activity.touch();
          return resolver.with(req.destinationPath, {}, async (copied) => {
            if (!copied.stats) throw pathError(Code.Aborted, req.destinationPath, "vanished right after the copy");
            return create(CopyResponseSchema, {
              entry: await describeEntry(resolver, copied, copied.stats),
              fileCount: BigInt(tally.files),
              copiedBytes: BigInt(tally.bytes),
            });
          });
        });
      }),

    remove: (req) =>
      guard(req.path, async () => {
        assertAcceptingWork(ctx);
        return resolver.with(req.path, {}, async (target) => {
          if (target.isRoot) throw pathError(Code.FailedPrecondition, req.path, "is the workspace root");
          if (!target.stats) {
            if (req.missingOk) return create(RemoveResponseSchema, { removedCount: 0n });
            throw pathError(Code.NotFound, req.path, "does not exist");
          }
          let removed = 1;
          if (!target.stats.isDirectory()) {
            await unlink(target.path);
          } else {
            try {
              await rmdir(target.path);
            } catch (error) {
              if (errnoOf(error) !== "ENOTEMPTY" && errnoOf(error) !== "EEXIST") throw error;
              if (!req.recursive) {
                throw pathError(Code.FailedPrecondition, req.path, "is a directory that is not empty: set recursive");
              }
              removed = await removeTree(target.dir, target.name);
            }
          }
          ctx.activity.touch();
          return create(RemoveResponseSchema, { removedCount: BigInt(removed) });
        });
      }),

    async *watch(req, handlerContext) {
      // Counted from the start, not once started: indexing a large tree takes a while, and
      // every watch that waits for it holds kernel watches and memory too.
      const { maxWatches } = ctx.config;
      if (openWatches >= maxWatches) {
        throw new ConnectError(
          `too many watches: a repl may have ${maxWatches} open at once (the runner's --max-watches); end one first, or watch a common parent directory`,
          Code.ResourceExhausted,
        );
      }
      openWatches++;
      try {
        const watch = await guard(req.path, () =>
          startWatch(req, {
            resolver,
            logger: ctx.logger,
            keepaliveMs: ctx.config.keepaliveMs,
            signal: handlerContext.signal,
          }),
        );
        watches.add(watch);
        try {
          yield* watch.messages;
        } finally {
          watch.close();
          watches.delete(watch);
        }
      } finally {
        openWatches--;
      }
    },

    upload: async (requests, handlerContext) => {
      assertAcceptingWork(ctx);
      return upload(resolver, ctx.activity, requests, handlerContext.signal);
    },

    download: (req) => download(resolver, req),
  };

  const endWatches = (error: ConnectError) => {
    for (const watch of watches) watch.close(error);
    watches.clear();
  };

  return {
    impl,
    workspaceReplaced() {
      resolver.reopen();
      endWatches(new ConnectError("the workspace was replaced: watch it again", Code.Aborted));
    },
    async close() {
      endWatches(new ConnectError("the runner is shutting down", Code.Unavailable));
    },
  };
}

/**
 * The checks Move and Copy share about what is at the destination: it may be replaced only
 * with `overwrite`, never by an object of the other kind (a file for a directory or the
 * reverse), and the workspace root is never replaced.
 */
function checkDestination(src: Located, dst: Located, overwrite: boolean): void {
  const isDirectory = src.stats?.isDirectory() ?? false;
  if (dst.directoryOnly && !isDirectory) {
    throw pathError(Code.FailedPrecondition, dst.display, "ends with / but the source is not a directory");
  }
  if (!dst.stats) return;
  if (!overwrite) throw pathError(Code.AlreadyExists, dst.display, "already exists (set overwrite to replace it)");
  if (dst.isRoot) throw pathError(Code.FailedPrecondition, dst.display, "is the workspace root");
  if (isDirectory && !dst.stats.isDirectory()) {
    throw pathError(Code.FailedPrecondition, dst.display, "is not a directory; a directory cannot replace it");
  }
  if (!isDirectory && dst.stats.isDirectory()) {
    throw pathError(Code.FailedPrecondition, dst.display, "is a directory; a file cannot replace it");
  }
}
