import { type ChildProcess, spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import {
  assertLimits,
  assertSandboxId,
  assertSocketPathBudget,
  createHostDirs,
  listRecords,
  prepareRoot,
  readRecord,
  removeSandboxFiles,
  type SandboxPaths,
  type SandboxRecord,
  sandboxPaths,
  writeRecord,
} from "./layout.js";
import type { Sandbox, SandboxDriver, SandboxDriverOptions, SandboxLimits, SandboxSpawnOptions } from "./types.js";

/** Host pids whose process group is one of `groups` (from /proc/<pid>/stat). */
async function pidsInGroups(groups: Set<number>): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    // Fields after the parenthesised command: state ppid pgrp ...
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] !== "Z" && groups.has(Number(fields[2]))) pids.push(Number(name));
  }
  return pids.sort((a, b) => a - b);
}

/** No isolation: same dirs, programs run directly as core's user. Tracks the process groups it starts. */
class NoneSandbox implements Sandbox {
  readonly hostDirs;
  readonly innerDirs;
  readonly userCgroupDirs: string[] = [];
  readonly gid: number;

  constructor(
    readonly id: string,
    readonly uid: number,
    private readonly paths: SandboxPaths,
    private readonly record: SandboxRecord,
  ) {
    this.gid = record.gid;
    this.hostDirs = paths.dirs;
    this.innerDirs = paths.dirs;
  }

  spawn(argv: string[], options: SandboxSpawnOptions): ChildProcess {
    const [program, ...args] = argv;
    if (!program) throw new Error("spawn needs a program");
    const child = spawn(program, args, {
      env: { HOME: this.hostDirs.home, TMPDIR: this.hostDirs.tmp, ...options.env },
      stdio: options.stdio,
      detached: true,
      cwd: this.hostDirs.workspace,
    });
    if (child.pid !== undefined) {
      // detached: the child leads its own process group, whose id is its pid.
      this.record.processGroups = [...(this.record.processGroups ?? []), child.pid];
      void writeRecord(this.paths, this.record).catch(() => undefined);
    }
    return child;
  }

  async setLimits(limits: SandboxLimits): Promise<void> {
    assertLimits(limits);
    this.record.limits = limits;
    await writeRecord(this.paths, this.record);
  }

  pids(): Promise<number[]> {
    return pidsInGroups(new Set(this.record.processGroups ?? []));
  }

  async signal(signal: NodeJS.Signals): Promise<void> {
    for (const group of this.record.processGroups ?? []) {
      try {
        process.kill(-group, signal);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
      }
    }
  }

  async kill(): Promise<void> {
    for (let i = 0; i < 2000; i++) {
      if ((await this.pids()).length === 0) return;
      await this.signal("SIGKILL");
      await sleep(5);
    }
    throw new Error(`processes of sandbox ${this.id} survived SIGKILL`);
  }

  async destroy(options?: { keepDirs?: boolean }): Promise<void> {
    await this.kill();
    await removeSandboxFiles(this.paths, options?.keepDirs ?? false);
  }
}

/** `--sandbox none`: the same interface without isolation, for development machines. */
export class NoneSandboxDriver implements SandboxDriver {
  readonly kind = "none" as const;

  constructor(private readonly options: SandboxDriverOptions) {}

  async check(): Promise<void> {
    await prepareRoot(this.options.root, false);
  }

  async create(id: string, limits: SandboxLimits): Promise<Sandbox> {
    assertSandboxId(id);
    assertLimits(limits);
    const paths = sandboxPaths(this.options.root, id);
    assertSocketPathBudget(paths);
    await this.check();
    if (await readRecord(paths)) throw new Error(`sandbox ${id} already exists`);
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    await createHostDirs(paths, uid, gid);
    const record: SandboxRecord = { id, kind: "none", uid, gid, createdAtMs: Date.now(), limits, processGroups: [] };
    await writeRecord(paths, record);
    this.options.logger.warn({ sandboxId: id }, "sandbox created without isolation (--sandbox none)");
    return new NoneSandbox(id, uid, paths, record);
  }

  async open(id: string): Promise<Sandbox | undefined> {
    assertSandboxId(id);
    const paths = sandboxPaths(this.options.root, id);
    const record = await readRecord(paths);
    return record?.kind === "none" ? new NoneSandbox(id, record.uid, paths, record) : undefined;
  }

  list(): Promise<string[]> {
    return listRecords(this.options.root, this.kind);
  }
}
