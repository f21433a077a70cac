import { execFileSync } from "node:child_process";
import { readdir, readFile, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Client, Code, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ReplService, ReplState, SnapshotReason } from "@devex/gen/devex/core/v1/repl_pb.js";
import { EntryType, FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { codeOf } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";
import { type SwiftServer, startSwiftServer } from "./support/swift-server.js";

/**
 * Workspaces through the whole system: a real core, real runners, real archives, and the
 * workspace store on the local filesystem (the default) and on a real Swift s3api.
 */

function files(endpointUrl: string, token: string): Client<typeof FilesystemService> {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  return createClient(FilesystemService, createGrpcTransport({ baseUrl: endpointUrl, interceptors: [auth] }));
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

function persistenceSuite(
  name: string,
  setup: () => Promise<{ core: CoreProcess; objectKeys(replId: string): Promise<string[]> }>,
) {
  describe(name, () => {
    let core: CoreProcess;
    let repls: Client<typeof ReplService>;
    let objectKeys: (replId: string) => Promise<string[]>;

    beforeAll(async () => {
      ({ core, objectKeys } = await setup());
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
    // The runner is still there, with the unsaved work.
    expect(Buffer.from((await fs.readFile({ path: "work.txt" })).content).toString()).toBe("unsaved work");

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
    } finally {
      swift.resume();
    }
    expect((await repls.stopRepl({ replId })).repl?.state).toBe(ReplState.STOPPED);
  });

  it("loses nothing when the runner is killed in the middle of a save", async () => {
    const { repl } = await repls.createRepl({ name: "killed", templateName: "blank" });
    const replId = repl?.id ?? "";
    const fs = await start(repls, replId);
    await fs.writeFile({ path: "saved.txt", content: Buffer.from("saved once") });
    const saved = (await repls.createSnapshot({ replId })).snapshot;
    // Enough incompressible data that the save takes a while.
    const random = Buffer.alloc(64 * 1024 * 1024);
    for (let i = 0; i < random.length; i += 4) random.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);
    await writeFile(join(await workspaceOf(core.dataDir, replId), "noise.bin"), random);

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
});
