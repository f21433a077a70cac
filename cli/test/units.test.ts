import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { configPath, readCredentials, removeCredentials, resolveCredentials, writeCredentials } from "../src/config.js";
import { exitStatusOf } from "../src/exit-status.js";
import { parseLocation } from "../src/location.js";
import { formatBytes, formatRelativeTime, formatTable } from "../src/output.js";
import { createProgressBar } from "../src/progress.js";

describe("config", () => {
  it("lives under XDG_CONFIG_HOME, else ~/.config", () => {
    expect(configPath({ XDG_CONFIG_HOME: "/x/conf", HOME: "/home/a" })).toBe("/x/conf/devex/config.json");
    expect(configPath({ HOME: "/home/a" })).toBe("/home/a/.config/devex/config.json");
    expect(configPath({ XDG_CONFIG_HOME: "relative", HOME: "/home/a" })).toBe("/home/a/.config/devex/config.json");
  });

  it("is written 0600 in a 0700 directory, read back, overridden by the environment and removed", async () => {
    const home = await mkdtemp(join(tmpdir(), "devex-config-"));
    try {
      const env = { HOME: home };
      const path = configPath(env);
      await writeCredentials({ baseUrl: "http://core:8080", apiKey: "dvx_a" }, path);
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect((await stat(join(home, ".config", "devex"))).mode & 0o777).toBe(0o700);
      expect(await readCredentials(path)).toEqual({ baseUrl: "http://core:8080", apiKey: "dvx_a" });
      expect(await resolveCredentials({ ...env, DEVEX_API_KEY: "dvx_b" })).toEqual({
        baseUrl: "http://core:8080",
        apiKey: "dvx_b",
        source: "environment",
      });
      expect(await removeCredentials(path)).toBe(true);
      await expect(resolveCredentials(env)).rejects.toThrow("not logged in");
      await writeCredentials({ baseUrl: "u", apiKey: "k" }, path);
      await import("node:fs/promises").then((fs) => fs.writeFile(path, "{oops"));
      await expect(readCredentials(path)).rejects.toThrow(`${path} is not a valid devex config file`);
      expect(await readFile(path, "utf8")).toBe("{oops");
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

describe("output", () => {
  it("aligns tables", () => {
    expect(
      formatTable(
        ["NAME", "STATE"],
        [
          ["a", "running"],
          ["longer", "x"],
        ],
      ),
    ).toBe("NAME    STATE\na       running\nlonger  x");
  });

  it("formats sizes and times", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(3 * 1024 * 1024)).toBe("3.0 MiB");
    const now = new Date("2026-12-01T12:00:00Z");
    expect(formatRelativeTime(new Date("2026-12-01T11:59:58Z"), now)).toBe("just now");
    expect(formatRelativeTime(new Date("2026-12-01T11:55:00Z"), now)).toBe("5m ago");
    expect(formatRelativeTime(new Date("2026-11-28T12:00:00Z"), now)).toBe("3d ago");
  });
});

describe("cp locations", () => {
  it("tells repl paths from local ones", () => {
    expect(parseLocation("web:/src/app.js")).toEqual({ kind: "repl", repl: "web", path: "src/app.js" });
    expect(parseLocation("web:src/app.js")).toEqual({ kind: "repl", repl: "web", path: "src/app.js" });
    expect(parseLocation("repl_01abc:")).toEqual({ kind: "repl", repl: "repl_01abc", path: "." });
    expect(parseLocation("repl_01abc:/")).toEqual({ kind: "repl", repl: "repl_01abc", path: "." });
    expect(parseLocation("./a:b")).toEqual({ kind: "local", path: "./a:b" });
    expect(parseLocation("/tmp/x")).toEqual({ kind: "local", path: "/tmp/x" });
    expect(parseLocation("notes.txt")).toEqual({ kind: "local", path: "notes.txt" });
  });
});

describe("exit status", () => {
  it("is the exit code, or 128 plus the signal number", () => {
    expect(exitStatusOf({ exitCode: 3 })).toBe(3);
    expect(exitStatusOf({ exitCode: null, signal: "KILL" })).toBe(137);
    expect(exitStatusOf({ exitCode: null, signal: "SIGTERM" })).toBe(143);
    expect(exitStatusOf({ exitCode: null })).toBe(1);
  });
});

describe("progress bar", () => {
  it("draws on a terminal, in place, and ends the line", () => {
    let written = "";
    const stream = { columns: 60, write: (text: string) => (written += text) } as unknown as NodeJS.WriteStream;
    let clock = 0;
    const bar = createProgressBar({ stream, label: "blob.bin", enabled: true, now: () => clock });
    bar.update(0, 2048);
    clock = 50;
    bar.update(1024, 2048); // within the redraw interval: not drawn
    clock = 1000;
    bar.update(1024, 2048);
    bar.finish();
    const clearLine = "\x1b[K";
    const frames = written.split("\r").filter(Boolean);
    expect(frames).toHaveLength(3);
    expect(frames[1]?.endsWith(clearLine)).toBe(true);
    expect(frames[1]?.replace(clearLine, "")).toMatch(/^blob\.bin \[#+-+\] {2}50% 1\.0 KiB\/2\.0 KiB 1\.0 KiB\/s$/);
    expect(frames[2]).toMatch(/100% 2\.0 KiB\/2\.0 KiB .*\n$/);
    expect(frames.every((frame) => frame.replace(clearLine, "").trimEnd().length < 60)).toBe(true);
  });

  it("draws nothing when disabled", () => {
    let written = "";
    const stream = { write: (text: string) => (written += text) } as unknown as NodeJS.WriteStream;
    const bar = createProgressBar({ stream, label: "x", enabled: false });
    bar.update(1, 2);
    bar.finish();
    expect(written).toBe("");
  });
});
