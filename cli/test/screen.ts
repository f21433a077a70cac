import xtermHeadless from "@xterm/headless";
import * as pty from "node-pty";
import type { CliHarness } from "./harness.js";

const { Terminal } = xtermHeadless;

/**
 * `devex shell` in a real PTY, its output rendered by a headless terminal so the test
 * reads the screen a person would see. A small sh script around it reports the exit
 * status and whether the terminal settings after `devex` are those from before it.
 */
export class ScreenUnderTest {
  private readonly terminal: InstanceType<typeof Terminal>;
  private readonly process: pty.IPty;
  private pendingWrites = 0;
  readonly exited: Promise<number>;

  constructor(harness: CliHarness, args: string[], env: NodeJS.ProcessEnv = {}, cols = 80, rows = 24) {
    const script = [
      'before=$(stty -g); "$0" "$@"; status=$?',
      '[ "$(stty -g)" = "$before" ] && echo TTY-RESTORED',
      "echo STATUS=$status",
    ].join("; ");
    this.terminal = new Terminal({ cols, rows, scrollback: 1000, allowProposedApi: true });
    this.process = pty.spawn("/bin/sh", ["-c", script, process.execPath, harness.bundle, ...args], {
      cols,
      rows,
      env: { ...harness.env, ...env, TERM: "xterm-256color" } as Record<string, string>,
    });
    this.process.onData((data) => {
      this.pendingWrites++;
      this.terminal.write(data, () => this.pendingWrites--);
    });
    this.exited = new Promise((resolve) => this.process.onExit(({ exitCode }) => resolve(exitCode)));
  }

  /** Every line of the screen and its scrollback, trailing blanks trimmed. */
  text(): string {
    const buffer = this.terminal.buffer.active;
    const lines: string[] = [];
    for (let y = 0; y < buffer.length; y++) lines.push(buffer.getLine(y)?.translateToString(true) ?? "");
    return lines.join("\n");
  }

  /** Waits until the screen matches, and returns the match. */
  async waitFor(pattern: string | RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const regex = typeof pattern === "string" ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) : pattern;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = this.pendingWrites === 0 ? this.text().match(regex) : null;
      if (match) return match;
      if (Date.now() > deadline) throw new Error(`screen never showed ${regex}; it shows:\n${this.text()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  type(text: string): void {
    this.process.write(text);
  }

  resize(cols: number, rows: number): void {
    this.process.resize(cols, rows);
    this.terminal.resize(cols, rows);
  }

  kill(): void {
    this.process.kill();
  }
}
