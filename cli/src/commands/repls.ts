import type { Repl, ReplState } from "@devex/sdk";
import { UsageError } from "../cli-error.js";
import type { CommandContext } from "../context.js";
import {
  formatTable,
  lastActive,
  printJson,
  printLine,
  printNotice,
  replToJson,
  skippedEntriesWarning,
} from "../output.js";

const replStates: ReplState[] = ["created", "starting", "running", "stopping", "stopped", "failed", "deleting"];

/** `devex ls`: the caller's repls as a table (name, id, state, template, last active). */
export async function listRepls(ctx: CommandContext, options: { state?: string[] }): Promise<void> {
  const states = options.state?.map(parseState);
  const devex = await ctx.connect();
  const repls = await devex.repls.list(states ? { states } : {});
  if (ctx.output.json) return printJson(ctx.output, repls.map(replToJson));
  if (repls.length === 0) {
    printNotice(ctx.output, "No repls yet; create one with `devex create <name> --template <template>`");
    return;
  }
  const now = new Date();
  const rows = repls.map((r) => [r.name, r.id, r.state, r.templateName, lastActive(r, now)]);
  printLine(ctx.output, formatTable(["NAME", "ID", "STATE", "TEMPLATE", "LAST ACTIVE"], rows));
}

/** Options of `devex create`. */
export interface CreateOptions {
  template: string;
  start?: boolean;
  idleTimeout?: string;
  label?: string[];
}

/** `devex create <name> --template <t>`: a new repl, started too with `--start`. */
export async function createRepl(ctx: CommandContext, name: string, options: CreateOptions): Promise<void> {
  const idle = options.idleTimeout === undefined ? {} : parseIdleTimeout(options.idleTimeout);
  const labels = options.label ? parseLabels(options.label) : undefined;
  const devex = await ctx.connect();
  let repl = await devex.repls.create({
    name,
    template: options.template,
    ...idle,
    ...(labels ? { labels } : {}),
  });
  if (options.start) repl = await repl.start();
  report(ctx, repl, `Created repl ${repl.name} (${repl.id}) from template ${repl.templateName}; it is ${repl.state}`);
}

/** `devex update <repl> --idle-timeout <seconds|default|never>`: changes its idle policy, also while it runs. */
export async function updateRepl(
  ctx: CommandContext,
  idOrName: string,
  options: { idleTimeout: string },
): Promise<void> {
  const change = parseIdleTimeout(options.idleTimeout);
  const devex = await ctx.connect();
  const repl = await (await ctx.findRepl(devex, idOrName)).update(change);
  const policy = repl.keepAwake
    ? "is kept awake: it is never stopped for being idle"
    : `is stopped after ${repl.idleTimeoutMs / 1000} s without activity`;
  report(ctx, repl, `Repl ${repl.name} ${policy}`);
}

/** `devex start <repl>`: starts it (nothing to do when running) and waits until it runs. */
export async function startRepl(ctx: CommandContext, idOrName: string): Promise<void> {
  const devex = await ctx.connect();
  const repl = await (await ctx.findRepl(devex, idOrName)).start();
  report(ctx, repl, `Repl ${repl.name} is ${repl.state}`);
}

/** `devex stop <repl>`: saves the workspace as a snapshot and stops the sandbox. */
export async function stopRepl(ctx: CommandContext, idOrName: string): Promise<void> {
  const devex = await ctx.connect();
  const { repl, snapshot } = await (await ctx.findRepl(devex, idOrName)).stop();
  if (ctx.output.json) return printJson(ctx.output, { repl: replToJson(repl), snapshot });
  const saved = snapshot ? `; workspace saved as snapshot ${snapshot.id}` : "";
  printNotice(ctx.output, `Repl ${repl.name} is ${repl.state}${saved}`);
  const warning = snapshot && skippedEntriesWarning(snapshot);
  if (warning) printNotice(ctx.output, warning);
}

/** `devex rm <repl...>`: deletes repls with their workspaces and snapshots. */
export async function removeRepls(
  ctx: CommandContext,
  idsOrNames: string[],
  options: { force?: boolean },
): Promise<void> {
  const devex = await ctx.connect();
  const removed: string[] = [];
  for (const idOrName of idsOrNames) {
    if (options.force) await devex.repls.delete(idOrName, { allowMissing: true });
    else await devex.repls.delete((await ctx.findRepl(devex, idOrName)).id);
    removed.push(idOrName);
    if (!ctx.output.json) printNotice(ctx.output, `Deleted repl ${idOrName}`);
  }
  if (ctx.output.json) printJson(ctx.output, { deleted: removed });
}

function report(ctx: CommandContext, repl: Repl, message: string): void {
  if (ctx.output.json) printJson(ctx.output, replToJson(repl));
  else printNotice(ctx.output, message);
}

function parseState(value: string): ReplState {
  const state = value.toLowerCase() as ReplState;
  if (!replStates.includes(state)) throw new UsageError(`--state: "${value}" is not one of ${replStates.join(", ")}`);
  return state;
}

/**
 * An `--idle-timeout` value: a whole number of seconds, `default` (the server's) or `never` (kept
 * awake). A timeout clears keep-awake, so the repl is stopped after it as asked.
 */
function parseIdleTimeout(value: string): { idleTimeoutMs?: number; keepAwake: boolean } {
  if (value === "never") return { keepAwake: true };
  if (value === "default") return { idleTimeoutMs: 0, keepAwake: false };
  const seconds = Number(value);
  if (!Number.isInteger(seconds) || seconds <= 0) {
    throw new UsageError(`--idle-timeout: "${value}" is not a whole number of seconds, "default" or "never"`);
  }
  return { idleTimeoutMs: seconds * 1000, keepAwake: false };
}

function parseLabels(values: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const value of values) {
    const at = value.indexOf("=");
    if (at <= 0) throw new UsageError(`--label: "${value}" is not key=value`);
    labels[value.slice(0, at)] = value.slice(at + 1);
  }
  return labels;
}
