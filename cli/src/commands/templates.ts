import type { CommandContext } from "../context.js";
import { formatTable, printJson, printLine } from "../output.js";

/** `devex templates`: the templates a repl can be created from. */
export async function listTemplates(ctx: CommandContext, options: { tag?: string }): Promise<void> {
  const devex = await ctx.connect();
  const templates = await devex.templates.list(options.tag ? { tag: options.tag } : {});
  if (ctx.output.json) return printJson(ctx.output, templates);
  const rows = templates.map((t) => [t.name, t.language, t.tags.join(","), t.description]);
  printLine(ctx.output, formatTable(["NAME", "LANGUAGE", "TAGS", "DESCRIPTION"], rows));
}
