import { UsageError } from "../cli-error.js";
import type { CommandContext } from "../context.js";
import {
  formatBytes,
  formatRelativeTime,
  formatTable,
  printJson,
  printLine,
  printNotice,
  skippedEntriesWarning,
} from "../output.js";

/** Options of `devex snapshots`. */
export interface SnapshotsOptions {
  message?: string;
}

/**
 * `devex snapshots <repl> [list | create [-m desc] | restore <snapshot id>]`: the saved
 * states of a repl's workspace, newest first; `create` saves a running repl, `restore`
 * makes an older snapshot current again.
 */
export async function snapshots(
  ctx: CommandContext,
  idOrName: string,
  action: string | undefined,
  snapshotId: string | undefined,
  options: SnapshotsOptions,
): Promise<void> {
  const verb = action ?? "list";
  if (verb !== "list" && verb !== "create" && verb !== "restore") {
    throw new UsageError(`unknown snapshots action "${verb}" (expected list, create or restore)`);
  }
  if (verb === "restore" && !snapshotId) throw new UsageError("snapshots restore needs a snapshot id");
  if (verb !== "restore" && snapshotId) throw new UsageError(`unexpected argument "${snapshotId}"`);
  if (verb !== "create" && options.message !== undefined) throw new UsageError("-m is only for snapshots create");

  const devex = await ctx.connect();
  const repl = await ctx.findRepl(devex, idOrName);
  if (verb === "create") {
    const snapshot = await repl.snapshots.create(options.message ? { description: options.message } : {});
    if (ctx.output.json) return printJson(ctx.output, snapshot);
    printNotice(ctx.output, `Created snapshot ${snapshot.id} of ${repl.name} (${formatBytes(snapshot.sizeBytes)})`);
    const warning = skippedEntriesWarning(snapshot);
    if (warning) printNotice(ctx.output, warning);
    return;
  }
  if (verb === "restore") {
    const snapshot = await repl.snapshots.restore(snapshotId ?? "");
    if (ctx.output.json) return printJson(ctx.output, snapshot);
    return printNotice(
      ctx.output,
      `Restored ${repl.name} to snapshot ${snapshotId}; it is now current as ${snapshot.id}`,
    );
  }
  const list = await repl.snapshots.list();
  if (ctx.output.json) return printJson(ctx.output, list);
  if (list.length === 0) return printNotice(ctx.output, `${repl.name} has no snapshots yet`);
  const now = new Date();
  const rows = list.map((s) => [
    s.current ? `${s.id} *` : s.id,
    formatRelativeTime(s.createdAt, now),
    s.reason,
    formatBytes(s.sizeBytes),
    String(s.fileCount),
    String(s.skippedEntryCount),
    s.description,
  ]);
  printLine(ctx.output, formatTable(["ID", "CREATED", "REASON", "SIZE", "FILES", "SKIPPED", "DESCRIPTION"], rows));
}
