import { existsSync, readFileSync } from "node:fs";
import { readdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { isProcessIdentity, type ProcessIdentity } from "../../process-start.js";
import { readJsonObject, writeJsonFile } from "./json-file.js";

/**
 * What `<dataDir>/runners/<replId>.json` says about a repl's runner, so that a restarted
 * core adopts it (or reaps what an interrupted start left). It is written before the
 * runner is spawned or a standby is handed the repl (pid 0 then), and removed once the
 * runner and its sandbox are gone.
 */
export interface RunnerRecord {
  replId: string;
  userId: string;
  /** The sandbox the runner runs in. */
  sandboxId: string;
  /** The host pid of the sandbox's outermost process (bwrap, or the runner itself without a sandbox); 0 before the spawn. */
  pid: number;
  startedAtMs: number;
  /** The core process that launched it: a start whose launcher died is abandoned. */
  launcher?: ProcessIdentity;
}

/**
 * What `<dataDir>/standbys/<sandboxId>.json` says about a standby runner: written before its
 * sandbox is made, so that a core dying while it boots leaves a trace, and so that replicas
 * sharing the data directory leave each other's standbys alone.
 */
export interface StandbyRecord {
  sandboxId: string;
  launcher: ProcessIdentity;
}

/**
 * Where a repl's last workspace lies on the host: the folder of the sandbox it last ran in,
 * kept after the runner stops (the save may have failed, or been skipped by a forced stop)
 * until the repl starts again or is deleted.
 */
export interface WorkspaceRecord {
  replId: string;
  sandboxId: string;
  /** The sandbox's host folder (holding `home/workspace/`, `tmp/` and `run/`). */
  dir: string;
  workspace: string;
}

const replIdPattern = /^repl_[0-9a-z]{26}$/;
const sandboxIdPattern = /^sbx_[a-z2-7]{12}$/;

/** The records of one data directory: runners (`*.json`) and last workspaces (`*.workspace.json`). */
export interface RunnerRecords {
  write(record: RunnerRecord): Promise<void>;
  read(replId: string): Promise<RunnerRecord | undefined>;
  /** Removes the repl's record if it still names `sandboxId` (a newer runner's record stays). */
  remove(replId: string, sandboxId: string): Promise<void>;
  /** Removes the repl's record whatever it says (one that does not parse). */
  discard(replId: string): Promise<void>;
  /** Repl ids with a runner record. */
  list(): Promise<string[]>;
  writeWorkspace(record: WorkspaceRecord): Promise<void>;
  readWorkspace(replId: string): Promise<WorkspaceRecord | undefined>;
  /** The same, read synchronously (Orchestrator.workspacePath is synchronous). */
  readWorkspaceSync(replId: string): WorkspaceRecord | undefined;
  removeWorkspace(replId: string): Promise<void>;
  /** Every last-workspace record. */
  listWorkspaces(): Promise<WorkspaceRecord[]>;
  writeStandby(record: StandbyRecord): Promise<void>;
  removeStandby(sandboxId: string): Promise<void>;
  /** Every standby record. */
  listStandbys(): Promise<StandbyRecord[]>;
  /**
   * Removes the temporary files of atomic writes (`*.<pid>.tmp`) whose writer is gone: a core
   * killed in the middle of a write leaves one behind.
   */
  sweepTemporary(): Promise<void>;
}

/**
 * The records under `dir` (`<dataDir>/runners`) and `standbyDir` (`<dataDir>/standbys`). Every
 * write is atomic (temporary file, then rename).
 */
export function createRunnerRecords(dir: string, standbyDir: string): RunnerRecords {
  const runnerPath = (replId: string) => join(dir, `${checkReplId(replId)}.json`);
  const workspacePath = (replId: string) => join(dir, `${checkReplId(replId)}.workspace.json`);
  const standbyPath = (sandboxId: string) => join(standbyDir, `${checkSandboxId(sandboxId)}.json`);

  const names = async (folder = dir): Promise<string[]> => {
    try {
      return await readdir(folder);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw error;
    }
  };

  const records: RunnerRecords = {
    write: (record) => writeJsonFile(runnerPath(record.replId), record),
    async read(replId) {
      const record = await readJsonObject(runnerPath(replId));
      const valid =
        record !== undefined &&
        record.replId === replId &&
        (record.launcher === undefined || isProcessIdentity(record.launcher)) &&
        typeof record.userId === "string" &&
        typeof record.sandboxId === "string" &&
        Number.isInteger(record.pid) &&
        Number(record.pid) >= 0 &&
        typeof record.startedAtMs === "number";
      return valid ? (record as unknown as RunnerRecord) : undefined;
    },
    async remove(replId, sandboxId) {
      const record = await records.read(replId);
      if (record && record.sandboxId !== sandboxId) return;
      await unlink(runnerPath(replId)).catch(() => {});
    },
    discard: (replId) => unlink(runnerPath(replId)).catch(() => {}),
    async list() {
      return (await names())
        .filter((name) => name.endsWith(".json") && !name.endsWith(".workspace.json"))
        .map((name) => name.slice(0, -".json".length))
        .filter((replId) => replIdPattern.test(replId));
    },
    writeWorkspace: (record) => writeJsonFile(workspacePath(record.replId), record),
    async readWorkspace(replId) {
      return asWorkspaceRecord(await readJsonObject(workspacePath(replId)), replId);
    },
    readWorkspaceSync(replId) {
      let value: unknown;
      try {
        value = JSON.parse(readFileSync(workspacePath(replId), "utf8"));
      } catch {
        return undefined;
      }
      return asWorkspaceRecord(value, replId);
    },
    removeWorkspace: (replId) => unlink(workspacePath(replId)).catch(() => {}),
    async listWorkspaces() {
      const ids = (await names())
        .filter((name) => name.endsWith(".workspace.json"))
        .map((name) => name.slice(0, -".workspace.json".length))
        .filter((replId) => replIdPattern.test(replId));
      const found = await Promise.all(ids.map((replId) => records.readWorkspace(replId)));
      return found.filter((record): record is WorkspaceRecord => record !== undefined);
    },
    writeStandby: (record) => writeJsonFile(standbyPath(record.sandboxId), record),
    removeStandby: (sandboxId) => unlink(standbyPath(sandboxId)).catch(() => {}),
    async listStandbys() {
      const found: StandbyRecord[] = [];
      for (const name of await names(standbyDir)) {
        const sandboxId = name.slice(0, -".json".length);
        if (!name.endsWith(".json") || !sandboxIdPattern.test(sandboxId)) continue;
        const record = await readJsonObject(join(standbyDir, name));
        if (record?.sandboxId === sandboxId && isProcessIdentity(record.launcher))
          found.push(record as unknown as StandbyRecord);
        else await unlink(join(standbyDir, name)).catch(() => {});
      }
      return found;
    },
    async sweepTemporary() {
      for (const folder of [dir, standbyDir]) {
        for (const name of await names(folder)) {
          const writer = /\.(\d+)\.tmp$/.exec(name)?.[1];
          if (writer === undefined || Number(writer) === process.pid || existsSync(`/proc/${writer}`)) continue;
          await unlink(join(folder, name)).catch(() => {});
        }
      }
    },
  };
  return records;
}

/** `value` if it is the last-workspace record of `replId`. */
function asWorkspaceRecord(value: unknown, replId: string): WorkspaceRecord | undefined {
  const record = value as Partial<WorkspaceRecord> | undefined;
  const valid =
    record !== undefined &&
    record !== null &&
    record.replId === replId &&
    typeof record.sandboxId === "string" &&
    typeof record.dir === "string" &&
    typeof record.workspace === "string";
  return valid ? (record as WorkspaceRecord) : undefined;
}

/** The sandbox id, or InvalidArgument: ids become file names. */
function checkSandboxId(sandboxId: string): string {
  if (!sandboxIdPattern.test(sandboxId)) {
    throw new ConnectError(`not a sandbox id: ${JSON.stringify(sandboxId)}`, Code.InvalidArgument);
  }
  return sandboxId;
}

/** The repl id, or InvalidArgument: ids become file names. */
export function checkReplId(replId: string): string {
  if (!replIdPattern.test(replId)) {
    throw new ConnectError(`not a repl id: ${JSON.stringify(replId)}`, Code.InvalidArgument);
  }
  return replId;
}
