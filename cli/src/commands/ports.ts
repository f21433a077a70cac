import type { Repl } from "@devex/sdk";
import { UsageError } from "../cli-error.js";
import type { CommandContext } from "../context.js";
import { formatTable, printJson, printLine, printNotice } from "../output.js";

/** `devex open <repl> [port]`: prints the URL a browser opens the repl's app at (default: its first port). */
export async function openPreview(ctx: CommandContext, idOrName: string, portText?: string): Promise<void> {
  const devex = await ctx.connect();
  const repl = await ctx.findRepl(devex, idOrName);
  const port = portText === undefined ? firstPort(repl) : parsePort(portText);
  const url = await repl.previewUrl(port);
  if (ctx.output.json) return printJson(ctx.output, { replId: repl.id, port, url });
  printLine(ctx.output, url);
}

/** Options of `devex ports`. */
export interface PortsOptions {
  public?: boolean;
  private?: boolean;
}

/** `devex ports <repl>` lists the repl's ports; `devex ports <repl> <port> --public|--private` changes one. */
export async function ports(
  ctx: CommandContext,
  idOrName: string,
  portText: string | undefined,
  options: PortsOptions,
): Promise<void> {
  if (options.public && options.private) throw new UsageError("give --public or --private, not both");
  const changing = options.public || options.private;
  if (changing && portText === undefined) throw new UsageError("--public and --private need a port");
  if (!changing && portText !== undefined) throw new UsageError("give --public or --private to change a port");
  const devex = await ctx.connect();
  let repl = await ctx.findRepl(devex, idOrName);
  if (changing) {
    const port = parsePort(portText as string);
    repl = await repl.setPortVisibility(port, Boolean(options.public));
    if (!ctx.output.json) {
      printNotice(ctx.output, `Port ${port} of ${repl.name} is ${options.public ? "public" : "private"}`);
      return;
    }
  }
  if (ctx.output.json) return printJson(ctx.output, repl.ports);
  if (repl.ports.length === 0) {
    printNotice(
      ctx.output,
      `Repl ${repl.name} has no ports; make one public with \`devex ports ${repl.name} <port> --public\``,
    );
    return;
  }
  const rows = repl.ports.map((p) => [String(p.number), p.name || "-", p.protocol, p.public ? "public" : "private"]);
  printLine(ctx.output, formatTable(["PORT", "NAME", "PROTOCOL", "VISIBILITY"], rows));
}

function firstPort(repl: Repl): number {
  const port = repl.ports[0];
  if (!port)
    throw new UsageError(`repl ${repl.name} declares no port: name one, as in \`devex open ${repl.name} 3000\``);
  return port.number;
}

function parsePort(text: string): number {
  const port = Number(text);
  if (!/^[0-9]+$/.test(text) || port < 1 || port > 65_535) {
    throw new UsageError(`port: "${text}" is not a port number (1 to 65535)`);
  }
  return port;
}
