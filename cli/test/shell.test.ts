import { randomBytes } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import xtermHeadless from "@xterm/headless";
import * as pty from "node-pty";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliHarness, startCliHarness } from "./harness.js";

const { Terminal } = xtermHeadless;

/**
 * `devex shell` in a real PTY, its output rendered by a headless terminal so the test
 * reads the screen a person would see. A small sh script around it reports the exit
 * status and whether the terminal settings after `devex` are those from before it.
 */
class ScreenUnderTest {
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

let h: CliHarness;
const screens: ScreenUnderTest[] = [];

beforeAll(async () => {
  h = await startCliHarness();
  await h.login();
  const created = await h.devex(["create", "term", "--template", "blank"]);
  if (created.status !== 0) throw new Error(created.stderr);
});
afterAll(async () => {
  for (const screen of screens) screen.kill();
  await h?.close();
});

function openShell(args: string[], env: NodeJS.ProcessEnv = {}): ScreenUnderTest {
  const screen = new ScreenUnderTest(h, args, env);
  screens.push(screen);
  return screen;
}

describe("devex shell in a real terminal", () => {
  it("runs a shell, follows a resize, detaches with Ctrl-], and reattaches with the screen replayed", async () => {
    const first = openShell(["shell", "term"]);
    await first.waitFor("Starting term...");
    await first.waitFor(/[$#] *$/m);
    first.type("echo hi-$((6*7))\r");
    await first.waitFor(/^hi-42$/m);

    first.resize(100, 30);
    // The resize travels SIGWINCH → devex → runner; ask until the shell sees it.
    let size: RegExpMatchArray | undefined;
    for (let attempt = 0; attempt < 20 && !size; attempt++) {
      first.type("stty size\r");
      size = await first.waitFor(/^30 100$/m, 500).catch(() => undefined);
    }
    expect(size).toBeDefined();

    first.type("\x1d");
    const [, sessionId] = await first.waitFor(/reattach with: devex shell term --session (\S+)/);
    await first.waitFor("STATUS=0");
    expect(first.text()).toContain("TTY-RESTORED");
    expect(await first.exited).toBe(0);

    const second = openShell(["shell", "term", "--session", sessionId ?? ""]);
    await second.waitFor(/^hi-42$/m);
    second.type("exit 7\r");
    await second.waitFor("STATUS=7");
    expect(second.text()).toContain("TTY-RESTORED");
  });

  it("explains a session that does not exist", async () => {
    const screen = openShell(["shell", "term", "--session", "no-such-session"]);
    await screen.waitFor(/STATUS=1/);
    expect(screen.text()).toMatch(/devex: .*no-such-session/);
    expect(screen.text()).toContain("TTY-RESTORED");
    expect(screen.text()).not.toMatch(/\n\s+at /);
  });
});

describe("other commands on a terminal", () => {
  it("prompts for the API key without echoing it", async () => {
    const config = await mkdtemp(join(tmpdir(), "devex-cli-config-"));
    try {
      const screen = openShell(["login", "--url", h.core.url], { XDG_CONFIG_HOME: config });
      await screen.waitFor("API key: ");
      screen.type(`${h.apiKey}\r`);
      await screen.waitFor("STATUS=0");
      expect(screen.text()).toContain("Logged in");
      expect(screen.text()).not.toContain(h.apiKey);
      expect(screen.text()).toContain("TTY-RESTORED");
      expect((await stat(join(config, "devex", "config.json"))).mode & 0o777).toBe(0o600);
    } finally {
      await rm(config, { recursive: true, force: true });
    }
  });

  it("draws a progress bar for cp", async () => {
    const dir = await mkdtemp(join(tmpdir(), "devex-cli-progress-"));
    try {
      await writeFile(join(dir, "big.bin"), randomBytes(2 * 1024 * 1024));
      const screen = openShell(["cp", join(dir, "big.bin"), "term:/big.bin"]);
      await screen.waitFor("STATUS=0");
      expect(screen.text()).toMatch(/^big\.bin \[#+\] 100% 2\.0 MiB\/2\.0 MiB .*\/s$/m);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
