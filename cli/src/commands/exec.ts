import type { CommandHandle } from "@devex/sdk";
import type { CommandContext } from "../context.js";
import { exitStatusOf } from "../exit-status.js";
import { printJson } from "../output.js";

/** Options of `devex exec`. */
export interface ExecOptions {
  interactive?: boolean;
  cwd?: string;
  env?: string[];
  timeout?: string;
}

/**
 * `devex exec <repl> -- cmd...`: runs a command in the repl (started first if needed),
 * streams its stdout and stderr, and resolves with its exit status (128+n for signal n).
 * Ctrl-C is passed on to the command as SIGINT; a second one leaves it running and exits.
 */
export async function execCommand(
  ctx: CommandContext,
  idOrName: string,
  argv: string[],
  options: ExecOptions,
): Promise<number> {
  const devex = await ctx.connect();
  let repl = await ctx.findRepl(devex, idOrName);
  if (repl.state !== "running") repl = await repl.start();
  // One argument is a shell command line ("ls | wc -l"); several are the program and its arguments.
  const command = argv.length === 1 ? (argv[0] ?? "") : argv;
  const common = {
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: Object.fromEntries(options.env.map((value) => splitEnv(value, ctx.env))) } : {}),
    ...(options.timeout ? { timeoutMs: Number(options.timeout) * 1000 } : {}),
  };

  if (ctx.output.json) {
    const result = await repl.commands.run(command, common);
    printJson(ctx.output, result);
    return exitStatusOf(result);
  }

  const handle = await repl.commands.start(command, {
    ...common,
    stdin: Boolean(options.interactive),
    onStdout: (data) => ctx.output.stdout.write(data),
    onStderr: (data) => ctx.output.stderr.write(data),
  });
  const stopForwarding = forwardInterrupts(handle);
  try {
    // Input after the command exited has nowhere to go; its failure is not the command's.
    if (options.interactive) void forwardStdin(ctx.stdin, handle).catch(() => {});
    return exitStatusOf(await handle.wait());
  } finally {
    stopForwarding();
    ctx.stdin.pause();
  }
}

/** `NAME=value`, or `NAME` alone for the local value, as docker does. */
function splitEnv(value: string, env: NodeJS.ProcessEnv): [string, string] {
  const at = value.indexOf("=");
  return at < 0 ? [value, env[value] ?? ""] : [value.slice(0, at), value.slice(at + 1)];
}

async function forwardStdin(stdin: NodeJS.ReadStream, handle: CommandHandle): Promise<void> {
  for await (const chunk of stdin) await handle.sendInput(chunk as Uint8Array);
  await handle.closeStdin();
}

function forwardInterrupts(handle: CommandHandle): () => void {
  let interrupts = 0;
  const onInterrupt = () => {
    interrupts++;
    if (interrupts === 1) void handle.kill("INT").catch(() => {});
    else {
      handle.disconnect();
      process.exit(130);
    }
  };
  process.on("SIGINT", onInterrupt);
  return () => process.off("SIGINT", onInterrupt);
}
