import type { TerminalExit, TerminalHandle } from "@devex/sdk";
import type { CommandContext } from "../context.js";
import { exitStatusOf } from "../exit-status.js";
import { printNotice } from "../output.js";

/** Ctrl-]: leaves the session running and returns to the local shell (as telnet and docker attach do). */
export const detachKey = 0x1d;

/** Options of `devex shell`. */
export interface ShellOptions {
  session?: string;
}

/**
 * `devex shell <repl>`: an interactive terminal in the repl. The local terminal goes into
 * raw mode so every key (Ctrl-C too) reaches the remote shell; output is copied to stdout,
 * window size changes are passed on, and Ctrl-] detaches. The local terminal is restored
 * on every way out. Resolves with the remote shell's exit status (0 after a detach).
 */
export async function shell(ctx: CommandContext, idOrName: string, options: ShellOptions): Promise<number> {
  const { stdin } = ctx;
  const { stdout, stderr } = ctx.output;
  const devex = await ctx.connect();
  let repl = await ctx.findRepl(devex, idOrName);
  if (repl.state !== "running") {
    printNotice(ctx.output, `Starting ${repl.name}...`);
    repl = await repl.start();
  }

  const size = () => ({ cols: stdout.columns || 80, rows: stdout.rows || 24 });
  const onData = (data: Uint8Array) => {
    stdout.write(data);
  };
  // A reattached session is resized before its screen is replayed, so it is drawn at this terminal's size.
  const handle: TerminalHandle = options.session
    ? await repl.terminal.connect(options.session, { ...size(), onData })
    : await repl.terminal.create({ ...size(), onData });

  const terminal = takeOverTerminal(stdin);
  let detach: () => void = () => {};
  const detached = new Promise<"detached">((resolve) => {
    detach = () => resolve("detached");
  });
  const onInput = (chunk: Buffer) => {
    const at = chunk.indexOf(detachKey);
    if (at < 0) return void handle.write(chunk).catch(() => {});
    if (at > 0) void handle.write(chunk.subarray(0, at)).catch(() => {});
    detach();
  };
  // Node turns SIGWINCH into a "resize" event on a terminal stdout.
  const onResize = () => void handle.resize(size().cols, size().rows).catch(() => {});
  const onEnd = () => detach();
  stdin.on("data", onInput);
  stdin.on("end", onEnd);
  stdout.on("resize", onResize);
  try {
    const outcome: TerminalExit | "detached" = await Promise.race([handle.wait(), detached]);
    if (outcome === "detached") {
      await handle.disconnect();
      terminal.restore();
      stderr.write(
        `\r\nDetached from session ${handle.id}; reattach with: devex shell ${idOrName} --session ${handle.id}\n`,
      );
      return 0;
    }
    return exitStatusOf(outcome);
  } finally {
    stdin.off("data", onInput);
    stdin.off("end", onEnd);
    stdout.off("resize", onResize);
    terminal.restore();
  }
}

/** Signals that end the process; the terminal is restored before it goes. */
const fatalSignals: NodeJS.Signals[] = ["SIGTERM", "SIGHUP", "SIGINT"];

/** Puts a terminal stdin in raw mode until `restore`, which also runs if the process exits or is killed. */
function takeOverTerminal(stdin: NodeJS.ReadStream): { restore(): void } {
  const raw = Boolean(stdin.isTTY);
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    if (raw) stdin.setRawMode(false);
    stdin.pause();
    process.off("exit", restore);
    for (const signal of fatalSignals) process.off(signal, onSignal);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    restore();
    process.kill(process.pid, signal);
  };
  if (raw) stdin.setRawMode(true);
  stdin.resume();
  process.on("exit", restore);
  for (const signal of fatalSignals) process.once(signal, onSignal);
  return { restore };
}
