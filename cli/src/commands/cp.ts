import { createReadStream, createWriteStream } from "node:fs";
import { chmod, mkdir, readdir, rename, rm, stat, symlink } from "node:fs/promises";
import { basename, join, posix } from "node:path";
import { pipeline } from "node:stream/promises";
import { NotFoundError, type Repl } from "@devex/sdk";
import { CliError, UsageError } from "../cli-error.js";
import type { CommandContext } from "../context.js";
import { type Location, parseLocation } from "../location.js";
import { printJson, printNotice } from "../output.js";
import { createProgressBar, type ProgressBar } from "../progress.js";

/** Options of `devex cp`. */
export interface CopyOptions {
  recursive?: boolean;
}

/** What `devex cp --json` prints. */
interface CopyResult {
  source: string;
  destination: string;
  files: number;
  bytes: number;
  /** Symlinks: made again on the local disk when downloading; left out of uploads (the repl's file API makes no links). */
  symlinks: number;
}

/** A file to move, with where it goes. */
interface Transfer {
  from: string;
  to: string;
  sizeBytes: number;
  mode: number;
}

/** `devex cp <from> <to>`: one side local, the other `repl:/path`; directories with `-r`. */
export async function copy(ctx: CommandContext, fromArgument: string, toArgument: string, options: CopyOptions) {
  const from = parseLocation(fromArgument);
  const to = parseLocation(toArgument);
  if (from.kind === to.kind) {
    throw new UsageError("one side of cp must be local and the other in a repl (repl:/path)");
  }
  const devex = await ctx.connect();
  const remote = from.kind === "repl" ? from : (to as Extract<Location, { kind: "repl" }>);
  let repl = await ctx.findRepl(devex, remote.repl);
  if (repl.state !== "running") repl = await repl.start();

  const result =
    from.kind === "local"
      ? await upload(ctx, repl, from.path, remote.path, options)
      : await download(ctx, repl, remote.path, to.path, options);
  if (ctx.output.json) printJson(ctx.output, { source: fromArgument, destination: toArgument, ...result });
}

function progressFor(ctx: CommandContext, label: string): ProgressBar {
  return createProgressBar({
    stream: ctx.output.stderr,
    label,
    enabled: Boolean(ctx.output.stderr.isTTY) && !ctx.output.json,
  });
}

async function upload(
  ctx: CommandContext,
  repl: Repl,
  localPath: string,
  remotePath: string,
  options: CopyOptions,
): Promise<Omit<CopyResult, "source" | "destination">> {
  const source = await stat(localPath).catch((error: NodeJS.ErrnoException) => {
    throw new CliError(
      `cannot read ${localPath}: ${error.code === "ENOENT" ? "no such file or directory" : error.message}`,
    );
  });
  if (source.isDirectory() && !options.recursive) throw new UsageError(`${localPath} is a directory (use -r)`);
  const into = remotePath.endsWith("/") || (await isRemoteDirectory(repl, remotePath));
  const target = into ? posix.join(remotePath, basename(localPath)) : remotePath;

  const directories: string[] = [];
  const transfers: Transfer[] = [];
  const skippedLinks: string[] = [];
  if (source.isDirectory()) {
    directories.push(target);
    for (const entry of await readdir(localPath, { recursive: true, withFileTypes: true })) {
      const local = join(entry.parentPath, entry.name);
      const relative = local.slice(localPath.length).split("/").filter(Boolean).join("/");
      const to = posix.join(target, relative);
      if (entry.isDirectory()) directories.push(to);
      else if (entry.isSymbolicLink()) skippedLinks.push(relative);
      else if (entry.isFile()) {
        const info = await stat(local);
        transfers.push({ from: local, to, sizeBytes: info.size, mode: info.mode & 0o777 });
      }
    }
  } else {
    transfers.push({ from: localPath, to: target, sizeBytes: source.size, mode: source.mode & 0o777 });
  }

  for (const directory of directories) await repl.fs.mkdir(directory, { parents: true });
  const totalBytes = transfers.reduce((sum, t) => sum + t.sizeBytes, 0);
  const bar = progressFor(ctx, basename(localPath));
  let doneBytes = 0;
  for (const transfer of transfers) {
    await repl.fs.upload(transfer.to, createReadStream(transfer.from), {
      mode: transfer.mode,
      createParents: true,
      onProgress: (bytes) => bar.update(doneBytes + bytes, totalBytes),
    });
    doneBytes += transfer.sizeBytes;
    bar.update(doneBytes, totalBytes);
  }
  bar.finish();
  if (skippedLinks.length > 0) {
    printNotice(
      ctx.output,
      `devex: left out ${skippedLinks.length} symlink(s), which the repl's file API cannot make: ${skippedLinks.slice(0, 5).join(", ")}${skippedLinks.length > 5 ? ", ..." : ""}`,
    );
  }
  return { files: transfers.length, bytes: totalBytes, symlinks: 0 };
}

async function download(
  ctx: CommandContext,
  repl: Repl,
  remotePath: string,
  localPath: string,
  options: CopyOptions,
): Promise<Omit<CopyResult, "source" | "destination">> {
  const source = await repl.fs.stat(remotePath).catch((error: unknown) => {
    if (error instanceof NotFoundError) throw new CliError(`no such file or directory: ${repl.name}:${remotePath}`);
    throw error;
  });
  if (source.type === "directory" && !options.recursive) throw new UsageError(`${remotePath} is a directory (use -r)`);
  const into = localPath.endsWith("/") || (await stat(localPath).catch(() => undefined))?.isDirectory();
  const name = remotePath === "." ? repl.name : posix.basename(remotePath);
  const target = into ? join(localPath, name) : localPath;

  const transfers: Transfer[] = [];
  let links = 0;
  if (source.type === "directory") {
    await mkdir(target, { recursive: true });
    const walk = async (remoteDirectory: string, localDirectory: string): Promise<void> => {
      for (const entry of await repl.fs.list(remoteDirectory, { includeHidden: true })) {
        const from = posix.join(remoteDirectory, entry.name);
        const to = join(localDirectory, entry.name);
        if (entry.type === "directory") {
          await mkdir(to, { recursive: true });
          await walk(from, to);
        } else if (entry.type === "file") {
          transfers.push({ from, to, sizeBytes: entry.sizeBytes, mode: entry.mode & 0o777 });
        } else if (entry.type === "symlink") {
          // Copied as a link, never followed (as cp -R does).
          await rm(to, { force: true });
          await symlink(entry.symlinkTarget, to);
          links++;
        }
      }
    };
    await walk(remotePath, target);
  } else {
    transfers.push({ from: remotePath, to: target, sizeBytes: source.sizeBytes, mode: source.mode & 0o777 });
  }

  const totalBytes = transfers.reduce((sum, t) => sum + t.sizeBytes, 0);
  const bar = progressFor(ctx, name);
  let doneBytes = 0;
  for (const transfer of transfers) {
    // Written beside the target and renamed, so a failed copy never leaves half a file under its name.
    const partial = `${transfer.to}.devex-partial`;
    try {
      const chunks = repl.fs.download(transfer.from, {
        onProgress: (bytes) => bar.update(doneBytes + bytes, totalBytes),
      });
      await pipeline(chunks, createWriteStream(partial, { mode: transfer.mode || 0o644 }));
      if (transfer.mode) await chmod(partial, transfer.mode);
      await rename(partial, transfer.to);
    } catch (error) {
      await rm(partial, { force: true });
      throw error;
    }
    doneBytes += transfer.sizeBytes;
    bar.update(doneBytes, totalBytes);
  }
  bar.finish();
  return { files: transfers.length, bytes: totalBytes, symlinks: links };
}

async function isRemoteDirectory(repl: Repl, path: string): Promise<boolean> {
  try {
    return (await repl.fs.stat(path)).type === "directory";
  } catch (error) {
    if (error instanceof NotFoundError) return false;
    throw error;
  }
}
