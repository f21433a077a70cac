import { execFileSync } from "node:child_process";
import { chmod, readdir, readFile, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Client, Code, createClient } from "@connectrpc/connect";
import { ReplService, ReplState, SkipReason, SnapshotReason } from "@devex/gen/devex/core/v1/repl_pb.js";
import { EntryType, FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService, ProcessState } from "@devex/gen/devex/runner/v1/process_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { codeOf } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";
import { runnerTransport } from "./support/runner-access.js";
import { type SwiftServer, startSwiftServer } from "./support/swift-server.js";

/**
 * Workspaces through the whole system: a real core, real runners, real archives, and the
 * workspace store on the local filesystem (the default) and on a real Swift s3api.
 */

function files(endpointUrl: string, token: string): Client<typeof FilesystemService> {
  return createClient(FilesystemService, runnerTransport({ endpointUrl, token }));
}

/** Every entry of the workspace as `path type mode [size|target]`, sorted: what a restore must give back exactly. */
async function tree(fs: Client<typeof FilesystemService>): Promise<string[]> {
  const { entries } = await fs.listDirectory({ path: ".", depth: 64, includeHidden: true, pageSize: 1000 });
  return entries
    .map((entry) => {
      const detail =
        entry.type === EntryType.SYMLINK
          ? `-> ${entry.symlinkTarget}`
          : entry.type === EntryType.FILE
            ? String(entry.sizeBytes)
            : "";
      return `${entry.path} ${EntryType[entry.type]} ${(entry.mode & 0o7777).toString(8)} ${detail}`.trim();
    })
    .sort();
}

async function start(repls: Client<typeof ReplService>, replId: string) {
  const started = await repls.startRepl({ replId });
  expect(started.repl?.state).toBe(ReplState.RUNNING);
  return files(started.access?.endpointUrl ?? "", started.access?.token ?? "");
}

/**
 * Writes a tree with the things a restore must keep: modes, symlinks (one pointing out of the
 * workspace, kept as a link and never followed), an empty folder, and paths the ignore file
 * leaves out. Symlinks are made on disk: the filesystem API makes none.
 */
/** Bytes no compressor shrinks: a save of them takes a while. */
function incompressible(bytes: number): Buffer {
  const random = Buffer.alloc(bytes);
  for (let i = 0; i < random.length; i += 4) random.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);
  return random;
}

/**
 * A running repl takes work as before a stop that failed: it writes files, runs commands and
 * opens terminals (a runner left drained refuses all three with `unavailable`).
 */
async function expectUsable(repls: Client<typeof ReplService>, replId: string): Promise<void> {
  const transport = runnerTransport((await repls.getReplAccess({ replId })).access);
  await createClient(FilesystemService, transport).writeFile({
    path: "after-failed-stop.txt",
    content: Buffer.from("ok"),
  });
  const ran = await createClient(ProcessService, transport).runProcess({
    config: { shell: "cat after-failed-stop.txt" },
  });
  expect(Buffer.from(ran.stdout).toString()).toBe("ok");
  const session = await createClient(TerminalService, transport).createSession({});
  expect(session.session?.id).toBeTruthy();
  await createClient(TerminalService, transport).closeSession({ sessionId: session.session?.id ?? "" });
}

/** A running repl's workspace on the host (in its sandbox's folder), as the local orchestrator records it. */
async function workspaceOf(dataDir: string, replId: string): Promise<string> {
  const record = JSON.parse(await readFile(join(dataDir, "runners", `${replId}.workspace.json`), "utf8")) as {
    workspace: string;
  };
  return record.workspace;
}

async function populate(fs: Client<typeof FilesystemService>, workspace: string): Promise<void> {
  await fs.writeFile({
    path: "bin/run.sh",
    content: Buffer.from("#!/bin/sh\necho hi\n"),
    createParents: true,
    mode: 0o755,
  });
  await fs.writeFile({ path: "secret.txt", content: Buffer.from("mine"), mode: 0o600 });
  await fs.writeFile({ path: "big.bin", content: Buffer.alloc(3 * 1024 * 1024, 7) });
  await fs.makeDirectory({ path: "empty/nested", parents: true });
  await symlink("bin/run.sh", join(workspace, "link-to-run"));
  await symlink("/etc", join(workspace, "link-out"));
  await fs.writeFile({ path: ".devexignore", content: Buffer.from("node_modules/\n*.log\n") });
  await fs.writeFile({ path: "node_modules/dep/index.js", content: Buffer.from("x"), createParents: true });
  await fs.writeFile({ path: "debug.log", content: Buffer.from("noise") });
}

/** A workspace store as a persistence suite sees it. */
interface StoreProbe {
  core: CoreProcess;
  objectKeys(replId: string): Promise<string[]>;
  /** The bytes of the repl's uploads in progress: above 0 once a save streams. */
  uploadingBytes(replId: string): Promise<number>;
}

function persistenceSuite(name: string, setup: () => Promise<StoreProbe>) {
  describe(name, () => {
    let core: CoreProcess;
    let repls: Client<typeof ReplService>;
    let objectKeys: (replId: string) => Promise<string[]>;
    let uploadingBytes: (replId: string) => Promise<number>;

    beforeAll(async () => {
      ({ core, objectKeys, uploadingBytes } = await setup());
      repls = core.client(ReplService, await core.devApiKey());
    });
    afterAll(async () => {
      await core?.stop();
      await core?.cleanup();
    });

    it("seeds from the exact template, saves on stop, tears the sandbox down, restores exactly on start, deletes everything", async () => {
      const { repl } = await repls.createRepl({ name: "kept", templateName: "node" });
      const replId = repl?.id ?? "";
      const seed = (await repls.listSnapshots({ replId })).snapshots;
      expect(seed).toMatchObject([{ reason: SnapshotReason.TEMPLATE_SEED, current: true }]);

      const first = await start(repls, replId);
      expect((await tree(first)).map((line) => line.split(" ")[0])).toEqual(["index.js", "package.json"]);
      const workspace = await workspaceOf(core.dataDir, replId);
      await populate(first, workspace);
      await first.remove({ path: "package.json" });
      const expected = (await tree(first)).filter(
        (line) => !line.startsWith("node_modules") && !line.startsWith("debug.log"),
      );

      const stopped = await repls.stopRepl({ replId });
      expect(stopped.repl?.state).toBe(ReplState.STOPPED);
      expect(stopped.snapshot).toMatchObject({ reason: SnapshotReason.STOP, current: true });
      expect(stopped.snapshot?.runnerVersion).not.toBe("");
      expect(stopped.snapshot?.sha256).toMatch(/^[0-9a-f]{64}$/);
      expect(Number(stopped.snapshot?.contentSizeBytes)).toBeGreaterThan(3 * 1024 * 1024);
      // The sandbox's own copy is gone: the snapshot is the workspace now.
      await expect(stat(workspace)).rejects.toMatchObject({ code: "ENOENT" });
      expect(await objectKeys(replId)).toEqual(
        expect.arrayContaining([
          `repls/${replId}/snapshots/${stopped.snapshot?.id}.tar.zst`,
          `repls/${replId}/snapshots/${stopped.snapshot?.id}.json`,
        ]),
      );

      const second = await start(repls, replId);
      expect(await tree(second)).toEqual(expected);
      expect(Buffer.from((await second.readFile({ path: "secret.txt" })).content).toString()).toBe("mine");
      // Deleted files stay deleted; ignored paths were not saved.
      expect(await codeOf(second.stat({ path: "package.json" }))).toBe(Code.NotFound);
      expect(await codeOf(second.stat({ path: "node_modules" }))).toBe(Code.NotFound);

      await repls.deleteRepl({ replId });
      expect(await objectKeys(replId)).toEqual([]);
    });

    it("keeps the repl running and the previous snapshot current when a save races a manual one", async () => {
      const { repl } = await repls.createRepl({ name: "racing", templateName: "blank" });
      const replId = repl?.id ?? "";
      const fs = await start(repls, replId);
      await fs.writeFile({ path: "data.txt", content: Buffer.from("v1") });
      const [manual, stopped] = await Promise.all([
        repls.createSnapshot({ replId, description: "manual" }),
        repls.stopRepl({ replId }),
      ]);
      expect(stopped.repl?.state).toBe(ReplState.STOPPED);
      // The stop saved after the manual save, so its snapshot is current; both are listed.
      expect(stopped.repl?.currentSnapshotId).toBe(stopped.snapshot?.id);
      const listed = (await repls.listSnapshots({ replId })).snapshots.map((s) => s.id);
      expect(listed.slice(0, 2)).toEqual([stopped.snapshot?.id, manual.snapshot?.id]);
      const again = await start(repls, replId);
      expect(Buffer.from((await again.readFile({ path: "data.txt" })).content).toString()).toBe("v1");
      await repls.deleteRepl({ replId });
    });

    it("answers CreateSnapshot with Unavailable, as StopRepl, when the runner dies in the middle of the save", async () => {
      // Where the stream is when the runner dies decides how its connection ends (reset, or
      // closed with CANCEL): a few rounds meet both.
      const calls = ["createSnapshot", "stopRepl", "createSnapshot", "stopRepl", "createSnapshot"] as const;
      for (const [round, call] of calls.entries()) {
        const { repl } = await repls.createRepl({ name: `dies-${round}`, templateName: "blank" });
        const replId = repl?.id ?? "";
        await start(repls, replId);
        const before = (await repls.listSnapshots({ replId })).snapshots;
        await writeFile(join(await workspaceOf(core.dataDir, replId), "noise.bin"), incompressible(16 * 1024 * 1024));
        const saving = (
          call === "createSnapshot" ? repls.createSnapshot({ replId }) : repls.stopRepl({ replId })
        ).catch((e: unknown) => e);
        for (let i = 0; i < 1_000 && (await uploadingBytes(replId)) === 0; i++) {
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        await killRunner(core.dataDir, replId);
        const error = await saving;
        expect(error, `${call} in round ${round}`).toMatchObject({ code: Code.Unavailable });
        expect((await repls.listSnapshots({ replId })).snapshots).toEqual(before);
        await repls.deleteRepl({ replId });
      }
    });

    it("names in the snapshot what the save left out: a FIFO, and what the repl's user may not read", async () => {
      const { repl } = await repls.createRepl({ name: "unsaveable", templateName: "blank" });
      const replId = repl?.id ?? "";
      const fs = await start(repls, replId);
      await fs.writeFile({ path: "kept.txt", content: Buffer.from("kept") });
      await fs.writeFile({ path: "locked.txt", content: Buffer.from("mine, but closed to me") });
      await fs.writeFile({
        path: "closed/inside.txt",
        content: Buffer.from("behind a closed folder"),
        createParents: true,
      });
      const workspace = await workspaceOf(core.dataDir, replId);
      execFileSync("mkfifo", [join(workspace, "pipe")]);
      // What `chmod 000` by the repl's user does: the runner, running as that user, may not read them.
      await chmod(join(workspace, "locked.txt"), 0o000);
      await chmod(join(workspace, "closed"), 0o000);

      const stopped = await repls.stopRepl({ replId });
      const skipped = {
        skippedEntryCount: 3,
        skippedEntries: [
          { path: "closed", reason: SkipReason.UNREADABLE },
          { path: "locked.txt", reason: SkipReason.UNREADABLE },
          { path: "pipe", reason: SkipReason.FIFO },
        ],
      };
      expect(stopped.snapshot).toMatchObject(skipped);
      expect((await repls.listSnapshots({ replId })).snapshots[0]).toMatchObject(skipped);
      await repls.deleteRepl({ replId });
    });
  });
}

persistenceSuite("persistence on the filesystem workspace store", async () => {
  const core = await startCoreProcess(["--runner-standby-count", "0"]);
  return {
    core,
    async objectKeys(replId) {
      const root = join(core.dataDir, "objects", "repls", replId);
      const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
      return entries
        .filter((entry) => entry.isFile())
        .map((entry) => join(entry.parentPath, entry.name).slice(join(core.dataDir, "objects").length + 1));
    },
    async uploadingBytes(replId) {
      const root = join(core.dataDir, "objects", "repls", replId);
      const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
      let bytes = 0;
      for (const entry of entries.filter((found) => found.name.startsWith(".devex-tmp-"))) {
        bytes += (await stat(join(entry.parentPath, entry.name)).catch(() => ({ size: 0 }))).size;
      }
      return bytes;
    },
  };
});

describe("persistence on Swift s3api, with faults", () => {
  let swift: SwiftServer;
  let core: CoreProcess;
  let repls: Client<typeof ReplService>;

  beforeAll(async () => {
    swift = await startSwiftServer();
    core = await startCoreProcess([
      "--runner-standby-count",
      "0",
      "--workspace-store",
      "s3",
      "--s3-endpoint",
      swift.endpoint,
      "--s3-region",
      swift.region,
      "--s3-bucket",
      "devex-test",
      "--s3-access-key-id",
      swift.accessKeyId,
      "--s3-secret-access-key",
      swift.secretAccessKey,
      "--s3-force-path-style",
      "--s3-create-bucket",
      "--s3-request-timeout-ms",
      "1500",
      "--reconcile-interval-ms",
      "500",
    ]);
    repls = core.client(ReplService, await core.devApiKey());
  }, 60_000);
  afterAll(async () => {
    await core?.stop();
    await core?.cleanup();
    await swift?.stop();
  });

  it("round-trips a workspace through S3", async () => {
    const { repl } = await repls.createRepl({ name: "on-s3", templateName: "python" });
    const replId = repl?.id ?? "";
    const fs = await start(repls, replId);
    await populate(fs, await workspaceOf(core.dataDir, replId));
    const expected = (await tree(fs)).filter(
      (line) => !line.startsWith("node_modules") && !line.startsWith("debug.log"),
    );
    expect((await repls.stopRepl({ replId })).repl?.state).toBe(ReplState.STOPPED);
    expect(await tree(await start(repls, replId))).toEqual(expected);
    await repls.stopRepl({ replId });
  });

  it("keeps the repl running with the previous snapshot current while the store is down, and stops once it is back", async () => {
    const { repl } = await repls.createRepl({ name: "outage", templateName: "blank" });
    const replId = repl?.id ?? "";
    const fs = await start(repls, replId);
    await fs.writeFile({ path: "work.txt", content: Buffer.from("unsaved work") });
    const before = (await repls.listSnapshots({ replId })).snapshots;

    await swift.down();
    const error = await repls.stopRepl({ replId }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: Code.Unavailable });
    expect(String(error)).toContain("still running");
    const during = (await repls.getRepl({ repl: { case: "replId", value: replId } })).repl;
    expect(during?.state).toBe(ReplState.RUNNING);
    expect(during?.currentSnapshotId).toBe(before[0]?.id);
    // The runner is still there, with the unsaved work, and takes work as before the stop.
    expect(Buffer.from((await fs.readFile({ path: "work.txt" })).content).toString()).toBe("unsaved work");
    await expectUsable(repls, replId);

    await swift.up();
    expect((await repls.listSnapshots({ replId })).snapshots).toEqual(before);
    expect((await repls.stopRepl({ replId })).repl?.state).toBe(ReplState.STOPPED);
    const again = await start(repls, replId);
    expect(Buffer.from((await again.readFile({ path: "work.txt" })).content).toString()).toBe("unsaved work");
    await repls.stopRepl({ replId });
  });

  it("fails a stop against a store that stops answering, within the request timeout, and saves later", async () => {
    const { repl } = await repls.createRepl({ name: "frozen", templateName: "blank" });
    const replId = repl?.id ?? "";
    const fs = await start(repls, replId);
    await fs.writeFile({ path: "a.txt", content: Buffer.from("a") });
    swift.freeze();
    try {
      const error = await repls.stopRepl({ replId }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: Code.Unavailable });
      expect((await repls.getRepl({ repl: { case: "replId", value: replId } })).repl?.state).toBe(ReplState.RUNNING);
      await expectUsable(repls, replId);
    } finally {
      swift.resume();
    }
    expect((await repls.stopRepl({ replId })).repl?.state).toBe(ReplState.STOPPED);
  });

  it("resumes the drained runner when the store fails in the middle of the upload", async () => {
    const { repl } = await repls.createRepl({ name: "mid-upload", templateName: "blank" });
    const replId = repl?.id ?? "";
    const fs = await start(repls, replId);
    await fs.writeFile({ path: "work.txt", content: Buffer.from("unsaved work") });
    await writeFile(join(await workspaceOf(core.dataDir, replId), "noise.bin"), incompressible(64 * 1024 * 1024));
    const processes = createClient(ProcessService, runnerTransport((await repls.getReplAccess({ replId })).access));
    const before = processes.startProcess({ config: { argv: ["sleep", "1000"], tag: "before" } });
    await before[Symbol.asyncIterator]().next();
    const stopping = repls.stopRepl({ replId }).catch((e: unknown) => e);
    // The stop drains the runner, then uploads for a while: the store goes down meanwhile.
    for (let i = 0; i < 200; i++) {
      const state = (await repls.getRepl({ repl: { case: "replId", value: replId } })).repl?.state;
      if (state === ReplState.STOPPING) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    await swift.down();
    try {
      const error = await stopping;
      expect(error).toMatchObject({ code: Code.Unavailable });
      expect(String(error)).toContain("still running");
      expect((await repls.getRepl({ repl: { case: "replId", value: replId } })).repl?.state).toBe(ReplState.RUNNING);
      expect(Buffer.from((await fs.readFile({ path: "work.txt" })).content).toString()).toBe("unsaved work");
      // The drain had ended what ran; the resumed runner takes work again.
      const ended = await processes.getProcess({ process: { selector: { case: "tag", value: "before" } } });
      expect(ended.process?.state).toBe(ProcessState.EXITED);
      await expectUsable(repls, replId);
    } finally {
      await swift.up();
    }
    expect((await repls.stopRepl({ replId })).repl?.state).toBe(ReplState.STOPPED);
    await repls.deleteRepl({ replId });
  });

  it("loses nothing when the runner is killed in the middle of a save", async () => {
    const { repl } = await repls.createRepl({ name: "killed", templateName: "blank" });
    const replId = repl?.id ?? "";
    const fs = await start(repls, replId);
    await fs.writeFile({ path: "saved.txt", content: Buffer.from("saved once") });
    const saved = (await repls.createSnapshot({ replId })).snapshot;
    // Enough incompressible data that the save takes a while.
    await writeFile(join(await workspaceOf(core.dataDir, replId), "noise.bin"), incompressible(64 * 1024 * 1024));

    const stopping = repls.stopRepl({ replId }).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 150));
    execFileSync("pkill", ["-KILL", "-f", `repl-id ${replId}`]);
    const error = await stopping;
    expect(error).toMatchObject({ code: Code.Unavailable });
    expect(String(error)).toContain("still running");

    // The previous snapshot is still current and whole; nothing half-written is listed.
    const listed = (await repls.listSnapshots({ replId })).snapshots;
    expect(listed[0]).toMatchObject({ id: saved?.id, current: true });
    // Core notices the runner is gone; starting again restores the last save.
    let state: ReplState | undefined;
    for (let i = 0; i < 100 && state !== ReplState.FAILED; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      state = (await repls.getRepl({ repl: { case: "replId", value: replId } })).repl?.state;
    }
    expect(state).toBe(ReplState.FAILED);
    const again = await start(repls, replId);
    expect(Buffer.from((await again.readFile({ path: "saved.txt" })).content).toString()).toBe("saved once");
    await repls.deleteRepl({ replId });
  });

  it("answers CreateRepl with Unavailable, naming the workspace store, while the store is down", async () => {
    await swift.down();
    try {
      // Past the catalog's one-second floor: a template it has not cached sends it to the store.
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      for (const templateName of ["blank", "not-cached"]) {
        const error = await repls.createRepl({ name: `down-${templateName}`, templateName }).catch((e: unknown) => e);
        expect(error, templateName).toMatchObject({ code: Code.Unavailable });
        expect(String(error)).toContain("workspace store");
      }
    } finally {
      await swift.up();
    }
    const names = (await repls.listRepls({})).repls.map((listed) => listed.name);
    expect(names.filter((name) => name.startsWith("down-"))).toEqual([]);
  });
});

/**
 * Kills (SIGKILL) the runner of `replId`: the process named devex-runner in the sandbox whose
 * outermost process the orchestrator recorded for the repl.
 */
async function killRunner(dataDir: string, replId: string): Promise<void> {
  const { pid: sandboxPid } = JSON.parse(await readFile(join(dataDir, "runners", `${replId}.json`), "utf8")) as {
    pid: number;
  };
  const parentOf = async (pid: number) => {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1] ?? 0);
  };
  for (const entry of await readdir("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    if ((await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "")).trim() !== "devex-runner") continue;
    for (let ancestor = pid; ancestor > 1; ancestor = await parentOf(ancestor)) {
      if (ancestor !== sandboxPid) continue;
      process.kill(pid, "SIGKILL");
      return;
    }
  }
  throw new Error(`no runner of ${replId} to kill`);
}
