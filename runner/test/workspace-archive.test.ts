import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { EntryType, FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService, type StartProcessResponse } from "@devex/gen/devex/runner/v1/process_pb.js";
import {
  ArchiveCompression,
  type ExportHeader,
  type ExportTrailer,
  type ExportWorkspaceRequestSchema,
  type ImportWorkspaceRequestSchema,
  type ImportWorkspaceResponse,
  RunnerService,
  Signal,
  SkipReason,
} from "@devex/gen/devex/runner/v1/runner_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { createLogger } from "@devex/kit";
import { afterEach, describe, expect, it, vi } from "vitest";
import { recoverInterruptedImport } from "../src/workspace-swap.js";
import { codeOf, startTestRunner, type TestRunner } from "./harness.js";

type RunnerClient = Client<typeof RunnerService>;

const runners: TestRunner[] = [];
afterEach(async () => {
  await Promise.all(runners.splice(0).map((t) => t.close()));
});

async function start(): Promise<{ t: TestRunner; runner: RunnerClient }> {
  const t = await startTestRunner();
  runners.push(t);
  return { t, runner: await t.client(RunnerService, { role: "core" }) };
}

interface Exported {
  header: ExportHeader;
  chunks: Uint8Array[];
  bytes: Buffer;
  trailer: ExportTrailer;
}

/** Runs ExportWorkspace to its end and checks the stream's shape: header, chunks of at most 1 MiB, trailer. */
async function exportWorkspace(
  runner: RunnerClient,
  request: MessageInitShape<typeof ExportWorkspaceRequestSchema> = {},
): Promise<Exported> {
  let header: ExportHeader | undefined;
  let trailer: ExportTrailer | undefined;
  const chunks: Uint8Array[] = [];
  for await (const message of runner.exportWorkspace(request)) {
    expect(trailer).toBeUndefined();
    const { kind } = message;
    if (kind.case === "header") {
      expect(header).toBeUndefined();
      header = kind.value;
    } else if (kind.case === "chunk") {
      expect(header).toBeDefined();
      expect(kind.value.byteLength).toBeLessThanOrEqual(1024 * 1024);
      chunks.push(kind.value);
    } else if (kind.case === "trailer") {
      trailer = kind.value;
    }
  }
  if (!header || !trailer) throw new Error("the export did not send a header and a trailer");
  const bytes = Buffer.concat(chunks);
  expect(trailer.archiveSizeBytes).toBe(BigInt(bytes.length));
  expect(trailer.sha256).toBe(sha256(bytes));
  return { header, chunks, bytes, trailer };
}

type ImportMessage = MessageInitShape<typeof ImportWorkspaceRequestSchema>;

/** Sends an archive to ImportWorkspace: a header (checksum of the bytes unless given), then 256 KiB chunks. */
function importWorkspace(
  runner: RunnerClient,
  bytes: Buffer,
  header: { sha256?: string; compression?: ArchiveCompression; archiveSizeBytes?: bigint } = {},
): Promise<ImportWorkspaceResponse> {
  async function* messages(): AsyncGenerator<ImportMessage> {
    yield {
      kind: {
        case: "header",
        value: { compression: ArchiveCompression.ZSTD, sha256: sha256(bytes), ...header },
      },
    };
    for (let offset = 0; offset < bytes.length; offset += 256 * 1024) {
      yield { kind: { case: "chunk", value: bytes.subarray(offset, offset + 256 * 1024) } };
    }
  }
  return runner.importWorkspace(messages());
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Every entry below `root`: kind, permission bits, contents or link target, and a file's modification time. */
async function describeTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const visit = async (dir: string, rel: string) => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const key = rel ? `${rel}/${name}` : name;
      const s = await lstat(path);
      const mode = (s.mode & 0o7777).toString(8);
      if (s.isSymbolicLink()) {
        out[key] = `symlink -> ${await readlink(path)}`;
      } else if (s.isDirectory()) {
        out[key] = `dir ${mode}`;
        await visit(path, key);
      } else {
        out[key] = `file ${mode} ${s.mtimeMs} ${sha256(await readFile(path))}`;
      }
    }
  };
  await visit(root, "");
  return out;
}

/** A workspace with nested and empty directories, several modes, symlinks in and out, and a 2 MiB file. */
async function fillWorkspace(root: string): Promise<void> {
  await mkdir(join(root, "src/lib/deep"), { recursive: true });
  await writeFile(join(root, "src/lib/deep/module.ts"), "export const answer = 42;\n");
  await writeFile(join(root, "src/run.sh"), "#!/bin/sh\necho run\n");
  await chmod(join(root, "src/run.sh"), 0o755);
  await writeFile(join(root, ".env"), "TOKEN=secret\n");
  await chmod(join(root, ".env"), 0o600);
  await writeFile(join(root, "notes.txt"), "group readable\n");
  await chmod(join(root, "notes.txt"), 0o640);
  await mkdir(join(root, "empty"));
  await mkdir(join(root, "private"));
  await chmod(join(root, "private"), 0o750);
  await symlink("src/lib", join(root, "lib"));
  await symlink("/etc/hostname", join(root, "outside-link"));
  await writeFile(join(root, "big.bin"), randomBytes(2 * 1024 * 1024));
  await utimes(join(root, "notes.txt"), 1_600_000_000, 1_600_000_000.5);
}

/** The siblings an import may leave beside the workspace (staging and trash directories). */
async function importLeftovers(workspace: string): Promise<string[]> {
  const prefix = `.${basename(workspace)}.import-`;
  return (await readdir(dirname(workspace))).filter((name) => name.startsWith(prefix));
}

/** An archive of a small tree made by another runner's export: one file, `from-archive.txt`. */
async function smallArchive(): Promise<Exported> {
  const { t, runner } = await start();
  await writeFile(join(t.workspace, "from-archive.txt"), "imported\n");
  return exportWorkspace(runner);
}

describe("ExportWorkspace and ImportWorkspace", () => {
  it("move a workspace to another runner exactly", async () => {
    const { t: source, runner: sourceRunner } = await start();
    const { t: target, runner: targetRunner } = await start();
    await fillWorkspace(source.workspace);
    await writeFile(join(target.workspace, "old.txt"), "must be gone after the import");
    await chmod(source.workspace, 0o711);

    const exported = await exportWorkspace(sourceRunner);
    expect(exported.header.compression).toBe(ArchiveCompression.ZSTD);
    expect(exported.header.startedAt).toBeDefined();
    expect(exported.chunks.length).toBeGreaterThan(1);
    expect(exported.trailer).toMatchObject({
      fileCount: 5n,
      directoryCount: 5n,
      symlinkCount: 2n,
      contentSizeBytes: BigInt(2 * 1024 * 1024 + 26 + 19 + 13 + 15),
    });

    const response = await importWorkspace(targetRunner, exported.bytes, {
      archiveSizeBytes: BigInt(exported.bytes.length),
    });
    expect(response).toMatchObject({
      fileCount: exported.trailer.fileCount,
      directoryCount: exported.trailer.directoryCount,
      symlinkCount: exported.trailer.symlinkCount,
      contentSizeBytes: exported.trailer.contentSizeBytes,
      archiveSizeBytes: exported.trailer.archiveSizeBytes,
    });
    expect(await describeTree(target.workspace)).toEqual(await describeTree(source.workspace));
    expect((await lstat(target.workspace)).mode & 0o777).toBe(0o711);
    await vi.waitFor(async () => expect(await importLeftovers(target.workspace)).toEqual([]));
  });

  for (const [name, compression] of [
    ["gzip", ArchiveCompression.GZIP],
    ["no", ArchiveCompression.NONE],
  ] as const) {
    it(`export and import with ${name} compression`, async () => {
      const { t: source, runner: sourceRunner } = await start();
      const { t: target, runner: targetRunner } = await start();
      await fillWorkspace(source.workspace);
      const exported = await exportWorkspace(sourceRunner, { compression });
      expect(exported.header.compression).toBe(compression);
      await importWorkspace(targetRunner, exported.bytes, { compression });
      expect(await describeTree(target.workspace)).toEqual(await describeTree(source.workspace));
    });
  }

  it("after an import, the filesystem, watches and new terminals see the new tree", async () => {
    const archive = await smallArchive();
    const { t, runner } = await start();
    await writeFile(join(t.workspace, "old.txt"), "old");
    const fs = await t.client(FilesystemService);
    const watchAbort = new AbortController();
    const watch = fs.watch({ path: "." }, { signal: watchAbort.signal })[Symbol.asyncIterator]();
    expect((await watch.next()).value?.kind.case).toBe("started");

    await importWorkspace(runner, archive.bytes);

    const ended = await (async () => {
      for (;;) if ((await watch.next()).done) return "ended without an error";
    })().catch((error: unknown) => ConnectError.from(error));
    expect(ended).toBeInstanceOf(ConnectError);
    expect((ended as ConnectError).code).toBe(Code.Aborted);
    expect((ended as ConnectError).rawMessage).toContain("the workspace was replaced");
    watchAbort.abort();

    expect((await fs.stat({ path: "from-archive.txt" })).entry?.type).toBe(EntryType.FILE);
    expect(await codeOf(fs.stat({ path: "old.txt" }))).toBe(Code.NotFound);
    expect((await fs.listDirectory({ path: "." })).entries.map((e) => e.name)).toEqual(["from-archive.txt"]);
    expect(Buffer.from((await fs.readFile({ path: "from-archive.txt" })).content).toString()).toBe("imported\n");
    await fs.writeFile({ path: "written-after.txt", content: Buffer.from("new") });
    expect(await readFile(join(t.workspace, "written-after.txt"), "utf8")).toBe("new");

    const terminal = await t.client(TerminalService);
    const id = "after-import";
    await terminal.createSession({
      spec: { sessionId: id, command: ["sh", "-c", "pwd; cat from-archive.txt; exec sleep 60"] },
    });
    await vi.waitFor(
      async () => {
        const screen = (await terminal.getScreen({ sessionId: id })).lines.join("\n");
        expect(screen).toContain(t.workspace);
        expect(screen).toContain("imported");
      },
      { timeout: 10_000 },
    );
    await terminal.closeSession({ sessionId: id, force: true });
  });

  it("export works after Shutdown", async () => {
    const { t, runner } = await start();
    await writeFile(join(t.workspace, "kept.txt"), "kept");
    await runner.shutdown({ gracePeriodMs: 100 });
    const exported = await exportWorkspace(runner, { compression: ArchiveCompression.NONE });
    expect(exported.trailer.fileCount).toBe(1n);
    expect(execFileSync("tar", ["-t", "-f", "-"], { input: exported.bytes }).toString()).toContain("kept.txt");
  });

  it("export honours the ignore file and exclude patterns", async () => {
    const { t, runner } = await start();
    await mkdir(join(t.workspace, "node_modules/pkg"), { recursive: true });
    await mkdir(join(t.workspace, "dist"));
    await writeFile(join(t.workspace, "node_modules/pkg/index.js"), "x");
    await writeFile(join(t.workspace, "dist/out.js"), "x");
    await writeFile(join(t.workspace, "app.log"), "x");
    await writeFile(join(t.workspace, "important.log"), "x");
    await writeFile(join(t.workspace, "main.ts"), "x");
    await writeFile(join(t.workspace, ".devexignore"), "*.log\n!important.log\ndist/\n");
    const exported = await exportWorkspace(runner, {
      compression: ArchiveCompression.NONE,
      ignoreFile: ".devexignore",
      exclude: ["node_modules/"],
    });
    const names = execFileSync("tar", ["-t", "-f", "-"], { input: exported.bytes }).toString().trim().split("\n");
    expect(names.sort()).toEqual(["./", ".devexignore", "important.log", "main.ts"]);
    expect(exported.trailer.fileCount).toBe(3n);
    // A missing ignore file leaves nothing out.
    const all = await exportWorkspace(runner, {
      compression: ArchiveCompression.NONE,
      ignoreFile: "nope/.devexignore",
    });
    expect(all.trailer.fileCount).toBe(6n);
  });

  it("export leaves out FIFOs, sockets and devices, and names them in the trailer", async () => {
    const { t, runner } = await start();
    await writeFile(join(t.workspace, "kept.txt"), "kept\n");
    await mkdir(join(t.workspace, "run"));
    execFileSync("mkfifo", [join(t.workspace, "run/pipe"), join(t.workspace, "ignored.fifo")]);
    execFileSync("mknod", [join(t.workspace, "null-device"), "c", "1", "3"]);
    await mkdir(join(t.workspace, "zz"));
    execFileSync(
      "mkfifo",
      Array.from({ length: 12 }, (_, i) => join(t.workspace, `zz/fifo-${i}`)),
    );
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(t.workspace, "run/app.sock"), resolve));
    try {
      const exported = await exportWorkspace(runner, { compression: ArchiveCompression.NONE, exclude: ["*.fifo"] });
      const names = execFileSync("tar", ["-t", "-f", "-"], { input: exported.bytes }).toString().trim().split("\n");
      expect(names.sort()).toEqual(["./", "kept.txt", "run/", "zz/"]);
      // Ignored paths are not counted; the first ten are named, in the order of the walk.
      expect(exported.trailer).toMatchObject({ fileCount: 1n, directoryCount: 2n, skippedEntryCount: 15n });
      expect(exported.trailer.skippedEntries.map((entry) => [entry.path, entry.reason])).toEqual([
        ["null-device", SkipReason.DEVICE],
        ["run/app.sock", SkipReason.SOCKET],
        ["run/pipe", SkipReason.FIFO],
        ...["0", "1", "10", "11", "2", "3", "4"].map((n) => [`zz/fifo-${n}`, SkipReason.FIFO]),
      ]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("export refuses an ignore file outside the workspace", async () => {
    const { t, runner } = await start();
    const outside = await mkdtemp(join(tmpdir(), "devex-outside-"));
    try {
      await writeFile(join(outside, "rules"), "*\n");
      await symlink(join(outside, "rules"), join(t.workspace, ".devexignore"));
      for (const ignoreFile of ["../rules", "/etc/passwd", ".devexignore", "."]) {
        const error = await exportWorkspace(runner, { ignoreFile }).catch((e: unknown) => ConnectError.from(e));
        expect(error, ignoreFile).toBeInstanceOf(ConnectError);
        expect((error as ConnectError).code, ignoreFile).toBe(Code.InvalidArgument);
        expect((error as ConnectError).rawMessage, ignoreFile).toContain("ignore_file");
      }
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it("cancelling an export kills tar and zstd", async () => {
    const { t, runner } = await start();
    for (let i = 0; i < 6; i++) await writeFile(join(t.workspace, `f${i}`), randomBytes(2 * 1024 * 1024));
    const abort = new AbortController();
    const stream = runner.exportWorkspace({}, { signal: abort.signal })[Symbol.asyncIterator]();
    await stream.next();
    await stream.next();
    expect(archivePrograms().length).toBeGreaterThan(0);
    abort.abort();
    await stream.next().catch(() => undefined);
    await vi.waitFor(() => expect(archivePrograms()).toEqual([]));
  });

  it("refuses users: both calls are for core only", async () => {
    const { t } = await start();
    const asUser = await t.client(RunnerService, { role: "user" });
    expect(await codeOf(exportWorkspace(asUser))).toBe(Code.PermissionDenied);
    expect(await codeOf(importWorkspace(asUser, Buffer.from("x")))).toBe(Code.PermissionDenied);
  });
});

/** The tar and zstd processes this test process started (the runner runs in it). */
function archivePrograms(): string[] {
  try {
    return execFileSync("ps", ["-o", "pid=,comm=", "--ppid", String(process.pid)])
      .toString()
      .split("\n")
      .filter((line) => /\b(tar|zstd)$/.test(line.trim()));
  } catch {
    return [];
  }
}

describe("ImportWorkspace refuses", () => {
  it("while a terminal session or a process runs, and after Shutdown, leaving the workspace as it was", async () => {
    const archive = await smallArchive();
    const { t, runner } = await start();
    await writeFile(join(t.workspace, "mine.txt"), "mine");
    const before = await describeTree(t.workspace);

    const terminal = await t.client(TerminalService);
    await terminal.createSession({ spec: { sessionId: "busy", command: ["sleep", "60"] } });
    const busy = await importWorkspace(runner, archive.bytes).catch((e: unknown) => ConnectError.from(e));
    expect((busy as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((busy as ConnectError).rawMessage).toContain("1 terminal sessions");
    await terminal.closeSession({ sessionId: "busy", force: true });

    const processes = await t.client(ProcessService);
    const started = processes.startProcess({ config: { argv: ["sleep", "60"], tag: "busy" } });
    const first = (await started[Symbol.asyncIterator]().next()).value as StartProcessResponse;
    expect(first.event.case).toBe("started");
    expect(await codeOf(importWorkspace(runner, archive.bytes))).toBe(Code.FailedPrecondition);
    await processes.signalProcess({ process: { selector: { case: "tag", value: "busy" } }, signal: Signal.KILL });
    await vi.waitFor(async () =>
      expect(await codeOf(importWorkspace(runner, Buffer.alloc(0), { sha256: "0".repeat(64) }))).toBe(Code.DataLoss),
    );

    await runner.shutdown({ gracePeriodMs: 100 });
    expect(await codeOf(importWorkspace(runner, archive.bytes))).toBe(Code.FailedPrecondition);
    expect(await describeTree(t.workspace)).toEqual(before);
    expect(await importLeftovers(t.workspace)).toEqual([]);
  });

  it("an archive whose checksum or size does not match, with DATA_LOSS and the workspace unchanged", async () => {
    const archive = await smallArchive();
    const { t, runner } = await start();
    await fillWorkspace(t.workspace);
    const before = await describeTree(t.workspace);
    const wrongSum = await importWorkspace(runner, archive.bytes, { sha256: "a".repeat(64) }).catch((e: unknown) =>
      ConnectError.from(e),
    );
    expect((wrongSum as ConnectError).code).toBe(Code.DataLoss);
    const wrongSize = importWorkspace(runner, archive.bytes, { archiveSizeBytes: BigInt(archive.bytes.length - 1) });
    expect(await codeOf(wrongSize)).toBe(Code.DataLoss);
    const truncated = archive.bytes.subarray(0, archive.bytes.length - 10);
    expect(await codeOf(importWorkspace(runner, truncated, { sha256: archive.trailer.sha256 }))).toBe(Code.DataLoss);
    expect(await describeTree(t.workspace)).toEqual(before);
    expect(await importLeftovers(t.workspace)).toEqual([]);
  });

  it("a second import while one is in progress, with ABORTED", async () => {
    const archive = await smallArchive();
    const { t, runner } = await start();
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    async function* slow(): AsyncGenerator<ImportMessage> {
      yield {
        kind: { case: "header", value: { compression: ArchiveCompression.ZSTD, sha256: archive.trailer.sha256 } },
      };
      yield { kind: { case: "chunk", value: archive.bytes.subarray(0, 10) } };
      await held;
      yield { kind: { case: "chunk", value: archive.bytes.subarray(10) } };
    }
    const first = runner.importWorkspace(slow());
    await vi.waitFor(async () => expect(await importLeftovers(t.workspace)).toHaveLength(1));
    const second = await importWorkspace(runner, archive.bytes).catch((e: unknown) => ConnectError.from(e));
    expect((second as ConnectError).code).toBe(Code.Aborted);
    release();
    expect((await first).fileCount).toBe(1n);
    expect(await readFile(join(t.workspace, "from-archive.txt"), "utf8")).toBe("imported\n");
  });

  it("malformed streams and archives, with INVALID_ARGUMENT", async () => {
    const archive = await smallArchive();
    const { t, runner } = await start();
    await writeFile(join(t.workspace, "mine.txt"), "mine");
    const before = await describeTree(t.workspace);
    const send = async (...messages: ImportMessage[]) => {
      async function* stream() {
        yield* messages;
      }
      return runner.importWorkspace(stream()).catch((e: unknown) => ConnectError.from(e));
    };
    const header: ImportMessage = {
      kind: { case: "header", value: { compression: ArchiveCompression.ZSTD, sha256: archive.trailer.sha256 } },
    };
    const chunk: ImportMessage = { kind: { case: "chunk", value: archive.bytes } };
    const noCompression: ImportMessage = {
      kind: { case: "header", value: { compression: ArchiveCompression.UNSPECIFIED, sha256: archive.trailer.sha256 } },
    };
    const badChecksum: ImportMessage = {
      kind: { case: "header", value: { compression: ArchiveCompression.ZSTD, sha256: "xyz" } },
    };
    const cases: [string, ImportMessage[], string][] = [
      ["no messages", [], "the first message must be the header"],
      ["no header", [chunk], "the first message must be the header"],
      ["header twice", [header, chunk, header], "the header was sent twice"],
      ["no compression", [noCompression, chunk], "header.compression"],
      ["a bad checksum format", [badChecksum, chunk], "header.sha256"],
    ];
    for (const [label, messages, problem] of cases) {
      const error = await send(...messages);
      expect(error, label).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code, label).toBe(Code.InvalidArgument);
      expect((error as ConnectError).rawMessage, label).toContain(problem);
    }

    const garbage = randomBytes(50_000);
    expect(await codeOf(importWorkspace(runner, garbage))).toBe(Code.InvalidArgument);
    // An absolute member name, as GNU tar writes it with --absolute-names.
    const outside = await mkdtemp(join(tmpdir(), "devex-planted-"));
    try {
      await writeFile(join(outside, "planted"), "planted");
      const unsafe = execFileSync("tar", ["-c", "-f", "-", "--absolute-names", join(outside, "planted")], {
        stdio: ["ignore", "pipe", "ignore"],
      });
      const error = await importWorkspace(runner, unsafe, { compression: ArchiveCompression.NONE }).catch(
        (e: unknown) => ConnectError.from(e),
      );
      expect((error as ConnectError).code).toBe(Code.InvalidArgument);
      expect((error as ConnectError).rawMessage).toContain("outside");
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
    expect(await describeTree(t.workspace)).toEqual(before);
    expect(await importLeftovers(t.workspace)).toEqual([]);
  });
});

describe("recovery at start", () => {
  const logger = createLogger({ service: "runner", level: "silent" });

  it("puts back a workspace moved aside by an import that crashed between its renames, and removes leftovers", async () => {
    const parent = await mkdtemp(join(tmpdir(), "devex-recover-"));
    try {
      const workspace = join(parent, "workspace");
      const older = join(parent, ".workspace.import-trash-001000000000000-aaaa");
      const newest = join(parent, ".workspace.import-trash-001700000000000-bbbb");
      const staging = join(parent, ".workspace.import-staging-cccccc");
      for (const dir of [older, newest, staging]) await mkdir(dir);
      await writeFile(join(newest, "marker"), "the workspace");
      await writeFile(join(staging, "half"), "unpacked halfway");
      await mkdir(join(parent, "other"));

      await recoverInterruptedImport(workspace, logger);
      expect(await readFile(join(workspace, "marker"), "utf8")).toBe("the workspace");
      await vi.waitFor(async () => expect((await readdir(parent)).sort()).toEqual(["other", "workspace"]));
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it("keeps an existing workspace and removes stale siblings", async () => {
    const parent = await mkdtemp(join(tmpdir(), "devex-recover-"));
    try {
      const workspace = join(parent, "ws");
      await mkdir(workspace);
      await writeFile(join(workspace, "current"), "current");
      await mkdir(join(parent, ".ws.import-trash-001700000000000-bbbb"));
      await mkdir(join(parent, ".ws.import-staging-cccccc"));
      await recoverInterruptedImport(workspace, logger);
      await vi.waitFor(async () => expect(await readdir(parent)).toEqual(["ws"]));
      expect(await readdir(workspace)).toEqual(["current"]);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});
