import { randomBytes } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliHarness, startCliHarness } from "./harness.js";
import { ScreenUnderTest } from "./screen.js";

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
