import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliHarness, startCliHarness } from "./harness.js";

let h: CliHarness;
let work: string;

beforeAll(async () => {
  [h, work] = await Promise.all([startCliHarness(), mkdtemp(join(tmpdir(), "devex-cli-files-"))]);
});
afterAll(async () => {
  await h?.close();
  await rm(work, { recursive: true, force: true });
});

const noStackTrace = (text: string) => expect(text).not.toMatch(/\n\s+at /);

describe("usage", () => {
  it("prints help for the program and each command, and exits 2 on a usage error", async () => {
    const help = await h.devex(["--help"]);
    expect(help.status).toBe(0);
    for (const command of ["login", "templates", "ls", "create", "start", "stop", "rm", "shell", "exec", "cp"]) {
      expect(help.stdout).toContain(command);
    }
    const execHelp = await h.devex(["exec", "--help"]);
    expect(execHelp.status).toBe(0);
    expect(execHelp.stdout).toContain("--interactive");

    const unknown = await h.devex(["frobnicate"]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain("devex: unknown command 'frobnicate'");
    const missing = await h.devex(["create", "x"]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain("--template");
  });

  it("says how to log in when there are no credentials", async () => {
    const result = await h.devex(["ls"]);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe("devex: not logged in; run `devex login --url <core url>` (or set DEVEX_API_KEY)\n");
  });
});

describe("login", () => {
  it("refuses a bad key with a clear message and saves nothing", async () => {
    const result = await h.devex(["login", "--url", h.core.url, "--api-key", "dvx_not-a-real-key"]);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe(`devex: the API key was refused by ${h.core.url}; nothing was saved\n`);
    await expect(stat(join(h.home, ".config", "devex", "config.json"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("reads the key from standard input, checks it and saves it with mode 0600 in a 0700 directory", async () => {
    const result = await h.devex(["login", "--url", h.core.url], { input: `${h.apiKey}\n` });
    expect(result.stderr).toContain("Logged in");
    expect(result.status).toBe(0);
    const dir = join(h.home, ".config", "devex");
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, "config.json"))).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(join(dir, "config.json"), "utf8"))).toEqual({
      baseUrl: h.core.url,
      apiKey: h.apiKey,
    });
  });

  it("lets DEVEX_API_KEY override the saved key", async () => {
    const result = await h.devex(["ls"], { env: { DEVEX_API_KEY: "dvx_wrong" } });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^devex: the API key was refused .*; run `devex login`\n$/);
  });
});

describe("repls", () => {
  it("lists templates as a table and as JSON", async () => {
    const table = await h.devex(["templates"]);
    expect(table.status).toBe(0);
    expect(table.stdout).toMatch(/^NAME\s+LANGUAGE/);
    expect(table.stdout).toMatch(/^blank\s/m);
    const json = await h.devex(["templates", "--json"]);
    expect((JSON.parse(json.stdout) as { name: string }[]).map((t) => t.name)).toEqual(
      expect.arrayContaining(["blank", "node", "python"]),
    );
  });

  it("creates a repl and lists it as a table and as JSON", async () => {
    const created = await h.devex(["create", "alpha", "--template", "blank", "--json"]);
    expect(created.status).toBe(0);
    const repl = JSON.parse(created.stdout) as { id: string; name: string; state: string };
    expect(repl).toMatchObject({ name: "alpha", state: "created" });
    expect(repl.id).toMatch(/^repl_/);

    const table = await h.devex(["ls"]);
    expect(table.status).toBe(0);
    const [header, ...rows] = table.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^NAME\s+ID\s+STATE\s+TEMPLATE\s+LAST ACTIVE$/);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatch(new RegExp(`^alpha\\s+${repl.id}\\s+created\\s+blank\\s+\\S`));

    const json = await h.devex(["ls", "--json"]);
    expect(JSON.parse(json.stdout)).toEqual([expect.objectContaining({ id: repl.id, name: "alpha" })]);

    const again = await h.devex(["create", "alpha", "--template", "blank"]);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/^devex: .*alpha.*\n$/);
    noStackTrace(again.stderr);
  });

  it("says which repl is missing, without a stack trace", async () => {
    const result = await h.devex(["start", "nope"]);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe('devex: repl "nope" not found\n');
  });

  it("starts a repl and runs commands in it, passing on their output and exit status", async () => {
    const started = await h.devex(["start", "alpha"]);
    expect(started.stderr).toContain("Repl alpha is running");
    expect(started.status).toBe(0);

    const three = await h.devex(["exec", "alpha", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3"]);
    expect(three).toEqual({ status: 3, stdout: "to-out\n", stderr: "to-err\n" });

    const signalled = await h.devex(["exec", "alpha", "--", "sh", "-c", "kill -TERM $$"]);
    expect(signalled.status).toBe(128 + 15);

    const fed = await h.devex(["exec", "-i", "alpha", "--", "tr", "a-z", "A-Z"], { input: "shout\n" });
    expect(fed).toMatchObject({ status: 0, stdout: "SHOUT\n" });

    const json = await h.devex(["exec", "alpha", "--json", "--", "sh", "-c", "echo hi; exit 4"]);
    expect(json.status).toBe(4);
    expect(JSON.parse(json.stdout)).toMatchObject({ stdout: "hi\n", exitCode: 4 });
  });

  it("copies files and directories both ways with identical bytes", async () => {
    const blob = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(join(work, "blob.bin"), blob);
    const up = await h.devex(["cp", join(work, "blob.bin"), "alpha:/data/blob.bin"]);
    expect(up.stderr).toBe(""); // no progress bar when stderr is not a terminal
    expect(up.status).toBe(0);
    const sum = await h.devex(["exec", "alpha", "--", "sha256sum", "data/blob.bin"]);
    expect(sum.stdout.split(" ")[0]).toBe(createHash("sha256").update(blob).digest("hex"));

    const down = await h.devex(["cp", "alpha:/data/blob.bin", join(work, "back.bin"), "--json"]);
    expect(down.status).toBe(0);
    expect(JSON.parse(down.stdout)).toMatchObject({ files: 1, bytes: blob.length });
    expect(Buffer.compare(await readFile(join(work, "back.bin")), blob)).toBe(0);

    await mkdir(join(work, "tree", "sub"), { recursive: true });
    await writeFile(join(work, "tree", "a.txt"), "A\n");
    await writeFile(join(work, "tree", "sub", "b.txt"), "B\n");
    expect((await h.devex(["cp", join(work, "tree"), "alpha:/"])).status).toBe(2); // a directory needs -r
    expect((await h.devex(["cp", "-r", join(work, "tree"), "alpha:/"])).status).toBe(0);
    expect((await h.devex(["exec", "alpha", "--", "cat", "tree/a.txt", "tree/sub/b.txt"])).stdout).toBe("A\nB\n");
    // A local symlink cannot be made in the repl: it is left out, and said so.
    await symlink("a.txt", join(work, "tree", "link.txt"));
    const withLink = await h.devex(["cp", "-r", join(work, "tree"), "alpha:/"]);
    expect(withLink.status).toBe(0);
    expect(withLink.stderr).toContain("left out 1 symlink(s)");
    expect(withLink.stderr).toContain("link.txt");
    // A symlink in the repl comes down as a link, never followed.
    await h.devex(["exec", "alpha", "--", "ln", "-s", "sub/b.txt", "tree/to-b"]);
    const copied = await h.devex(["cp", "-r", "alpha:/tree", join(work, "copy"), "--json"]);
    expect(copied.status).toBe(0);
    expect(JSON.parse(copied.stdout)).toMatchObject({ symlinks: 1 });
    expect(await readFile(join(work, "copy", "sub", "b.txt"), "utf8")).toBe("B\n");
    expect(await readlink(join(work, "copy", "to-b"))).toBe("sub/b.txt");

    const missing = await h.devex(["cp", "alpha:/no/such/file", work]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toBe("devex: no such file or directory: alpha:no/such/file\n");
  });

  it("creates, lists and restores snapshots", async () => {
    await h.devex(["exec", "alpha", "--", "sh", "-c", "echo first > note.txt"]);
    const created = await h.devex(["snapshots", "alpha", "create", "-m", "with the first note", "--json"]);
    expect(created.status).toBe(0);
    const snapshot = JSON.parse(created.stdout) as { id: string; description: string; reason: string };
    expect(snapshot).toMatchObject({ description: "with the first note", reason: "manual" });

    const table = await h.devex(["snapshots", "alpha"]);
    expect(table.status).toBe(0);
    expect(table.stdout).toMatch(/^ID\s+CREATED\s+REASON\s+SIZE\s+FILES\s+SKIPPED\s+DESCRIPTION/);
    expect(table.stdout).toContain(snapshot.id);
    expect(table.stdout).toContain("with the first note");

    await h.devex(["exec", "alpha", "--", "sh", "-c", "echo second > note.txt && mkfifo pipe"]);
    const stopped = await h.devex(["stop", "alpha"]);
    expect(stopped.status).toBe(0);
    expect(stopped.stderr).toMatch(/Repl alpha is stopped; workspace saved as snapshot snap_/);
    // A snapshot holds no FIFOs: the stop says so rather than lose it quietly.
    expect(stopped.stderr).toMatch(/warning: snapshot snap_\w+ left out 1 entry of the workspace: pipe \(a FIFO\)\n/);

    const restored = await h.devex(["snapshots", "alpha", "restore", snapshot.id]);
    expect(restored.stderr).toContain(`Restored alpha to snapshot ${snapshot.id}`);
    expect(restored.status).toBe(0);
    // exec starts the repl again, from the restored workspace.
    expect((await h.devex(["exec", "alpha", "--", "cat", "note.txt"])).stdout).toBe("first\n");

    const bad = await h.devex(["snapshots", "alpha", "frob"]);
    expect(bad.status).toBe(2);
  });

  it("stops and deletes repls", async () => {
    const stopped = await h.devex(["stop", "alpha", "--json"]);
    expect(stopped.status).toBe(0);
    expect(JSON.parse(stopped.stdout)).toMatchObject({ repl: { name: "alpha", state: "stopped" } });
    const removed = await h.devex(["rm", "alpha"]);
    expect(removed.status).toBe(0);
    expect((await h.devex(["ls", "--json"])).stdout.trim()).toBe("[]");
    expect((await h.devex(["rm", "alpha"])).stderr).toBe('devex: repl "alpha" not found\n');
    expect((await h.devex(["rm", "-f", "alpha"])).status).toBe(0);
  });

  it("logs out", async () => {
    expect((await h.devex(["logout"])).status).toBe(0);
    expect((await h.devex(["ls"])).stderr).toContain("not logged in");
  });
});
