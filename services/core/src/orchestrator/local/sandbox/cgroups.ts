import { chown, mkdir, readdir, readFile, rm, rmdir, stat, statfs, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type SandboxLimits, SandboxSetupError } from "./types.js";

/** Controllers a sandbox needs; v1 also uses `freezer` when mounted, to kill without races. */
const REQUIRED_CONTROLLERS = ["memory", "pids", "cpu"] as const;
const CPU_PERIOD_US = 100_000;
/** The runner leaf gets this many times the user leaf's CPU weight, so a busy repl stays controllable. */
const RUNNER_CPU_WEIGHT = 200;
const USER_CPU_WEIGHT = 100;

/** The cgroup hierarchies of this machine, as a sandbox uses them. */
export interface CgroupHierarchies {
  version: 1 | 2;
  /**
   * Parent dir of the sandbox groups, per controller (v1: memory, pids, cpu, maybe freezer;
   * v2: one entry, "unified").
   */
  parents: Record<string, string>;
}

/** Caps of the runner leaf. */
export interface RunnerCaps {
  memoryBytes: number;
  maxProcesses: number;
}

/** Parses /proc/self/cgroup: controller (or "" for v2) to path. */
function ownCgroups(text: string): Map<string, string> {
  const paths = new Map<string, string>();
  for (const line of text.split("\n")) {
    const match = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!match) continue;
    for (const controller of (match[1] ?? "").split(",")) paths.set(controller, match[2] ?? "/");
  }
  return paths;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds the hierarchies under `root` (v2 when `root/cgroup.controllers` exists) and where the
 * sandbox groups go: `parent` relative to core's own cgroup, or from the hierarchy root if absolute.
 */
export async function detectCgroups(root: string, parent: string): Promise<CgroupHierarchies> {
  const own = ownCgroups(await readFile("/proc/self/cgroup", "utf8").catch(() => ""));
  const under = (mount: string, controller: string) =>
    join(mount, parent.startsWith("/") ? parent : join(own.get(controller) ?? "/", parent));
  if (await exists(join(root, "cgroup.controllers"))) {
    const available = (await readFile(join(root, "cgroup.controllers"), "utf8")).split(/\s+/);
    const missing = REQUIRED_CONTROLLERS.filter((c) => !available.includes(c));
    if (missing.length > 0) {
      throw new SandboxSetupError(
        `cgroup v2 at ${root} lacks the ${missing.join(", ")} controller(s); enable them (or delegate them to core's service)`,
      );
    }
    return { version: 2, parents: { unified: under(root, "") } };
  }
  let entries: string[] = [];
  try {
    entries = await readdir(root);
  } catch {
    throw new SandboxSetupError(`no cgroup filesystem at ${root}: mount cgroups (v1 or v2) there`);
  }
  const parents: Record<string, string> = {};
  for (const controller of [...REQUIRED_CONTROLLERS, "freezer"]) {
    // Co-mounted controllers appear as e.g. "cpu,cpuacct".
    const mount = entries.find((name) => name.split(",").includes(controller));
    if (mount) parents[controller] = under(join(root, mount), controller);
  }
  const missing = REQUIRED_CONTROLLERS.filter((c) => !parents[c]);
  if (missing.length > 0) {
    throw new SandboxSetupError(
      `cgroup v1 controller(s) ${missing.join(", ")} not mounted under ${root}; mount them or switch the machine to cgroup v2`,
    );
  }
  return { version: 1, parents };
}

async function write(file: string, value: string | number): Promise<void> {
  await writeFile(file, String(value));
}

async function readPids(file: string): Promise<number[]> {
  try {
    return (await readFile(file, "utf8")).split("\n").filter(Boolean).map(Number);
  } catch (error) {
    if (isRemovedCgroup(error)) return [];
    throw error;
  }
}

/**
 * Whether an error says the cgroup is gone: removed once empty (by another core, or a
 * concurrent destroy), a group's files vanish (ENOENT) or, if open, fail with ENODEV.
 */
function isRemovedCgroup(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENODEV";
}

function signalPids(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
    }
  }
}

/**
 * One sandbox's cgroups: per controller a group `<parent>/<id>` with leaves `runner` (the runner)
 * and `user` (every program the runner starts). v1 freezer has the group only.
 */
export class SandboxCgroups {
  /** Each controller's sandbox group (host path). */
  readonly groups: Record<string, string>;

  constructor(
    readonly version: 1 | 2,
    groups: Record<string, string>,
  ) {
    this.groups = groups;
  }

  static forSandbox(hierarchies: CgroupHierarchies, id: string): SandboxCgroups {
    const groups: Record<string, string> = {};
    for (const [controller, parent] of Object.entries(hierarchies.parents)) groups[controller] = join(parent, id);
    return new SandboxCgroups(hierarchies.version, groups);
  }

  /** Controllers with runner and user leaves (all but the v1 freezer). */
  private get leafControllers(): string[] {
    return Object.keys(this.groups).filter((c) => c !== "freezer");
  }

  private leaf(controller: string, name: "runner" | "user"): string {
    return join(this.groups[controller] as string, name);
  }

  /** Files a root shim writes its own pid into before it drops to the sandbox uid. */
  runnerProcsFiles(): string[] {
    const files = this.leafControllers.map((c) => join(this.leaf(c, "runner"), "cgroup.procs"));
    if (this.groups.freezer) files.push(join(this.groups.freezer, "cgroup.procs"));
    return files;
  }

  /** Host dirs of the user leaves, bound into the sandbox so the runner can move programs there. */
  userLeafDirs(): string[] {
    return this.leafControllers.map((c) => this.leaf(c, "user"));
  }

  /** Creates the groups and leaves, sets limits and hands `uid` exactly the files it must write. */
  async create(limits: SandboxLimits, runner: RunnerCaps, uid: number, gid: number): Promise<void> {
    for (const [controller, group] of Object.entries(this.groups)) {
      const parent = dirname(group);
      if (this.version === 2) await this.enableV2Controllers(parent);
      else await mkdir(parent, { recursive: true });
      await mkdir(group);
      if (controller === "freezer") continue;
      if (this.version === 2)
        await write(join(group, "cgroup.subtree_control"), REQUIRED_CONTROLLERS.map((c) => `+${c}`).join(" "));
      await mkdir(this.leaf(controller, "runner"));
      await mkdir(this.leaf(controller, "user"));
    }
    await this.setRunnerCaps(runner);
    await this.setLimits(limits);
    for (const dir of this.userLeafDirs()) {
      await chown(join(dir, "cgroup.procs"), uid, gid);
      // v1 also moves single threads through `tasks`; v2 moves processes only.
      if (this.version === 1) await chown(join(dir, "tasks"), uid, gid);
    }
    // v2 delegation: moving a process needs write access to the common ancestor's cgroup.procs too.
    // The group itself has controllers enabled, so no process can be moved into it.
    if (this.version === 2) await chown(join(this.groups.unified as string, "cgroup.procs"), uid, gid);
  }

  /** Enables cpu, memory and pids from the nearest existing cgroup down to `parent` (created as needed). */
  private async enableV2Controllers(parent: string): Promise<void> {
    const chain: string[] = [];
    let dir = parent;
    while (!(await exists(join(dir, "cgroup.controllers")))) {
      chain.unshift(dir);
      if (dirname(dir) === dir) throw new SandboxSetupError(`${parent} is not inside a cgroup v2 hierarchy`);
      dir = dirname(dir);
    }
    chain.unshift(dir);
    for (const cgroup of chain) {
      await mkdir(cgroup, { recursive: true });
      const subtree = join(cgroup, "cgroup.subtree_control");
      const enabled = (await readFile(subtree, "utf8").catch(() => "")).split(/\s+/);
      const wanted = REQUIRED_CONTROLLERS.filter((c) => !enabled.includes(c));
      if (wanted.length > 0) await write(subtree, wanted.map((c) => `+${c}`).join(" "));
    }
  }

  private async setRunnerCaps(caps: RunnerCaps): Promise<void> {
    if (this.version === 2) {
      const runner = this.leaf("unified", "runner");
      await write(join(runner, "memory.max"), caps.memoryBytes);
      await write(join(runner, "pids.max"), caps.maxProcesses);
      await write(join(runner, "cpu.weight"), RUNNER_CPU_WEIGHT);
      return;
    }
    await write(join(this.leaf("memory", "runner"), "memory.limit_in_bytes"), caps.memoryBytes);
    await write(join(this.leaf("pids", "runner"), "pids.max"), caps.maxProcesses);
    // v1 cpu.shares: 1024 is the default weight of a group.
    await write(join(this.leaf("cpu", "runner"), "cpu.shares"), (1024 * RUNNER_CPU_WEIGHT) / USER_CPU_WEIGHT);
  }

  /** Sets the user leaf's memory and process limits and the group's CPU quota. */
  async setLimits(limits: SandboxLimits): Promise<void> {
    const quotaUs = Math.max(1000, Math.round((limits.cpuMillicores * CPU_PERIOD_US) / 1000));
    if (this.version === 2) {
      const user = this.leaf("unified", "user");
      await write(join(user, "memory.max"), limits.memoryBytes);
      // Without swap the limit is a real limit: a hog is OOM-killed instead of swapping the host.
      await write(join(user, "memory.swap.max"), 0).catch(() => undefined);
      await write(join(user, "pids.max"), limits.maxProcesses);
      await write(join(user, "cpu.weight"), USER_CPU_WEIGHT);
      await write(join(this.groups.unified as string, "cpu.max"), `${quotaUs} ${CPU_PERIOD_US}`);
      return;
    }
    const memory = this.leaf("memory", "user");
    const memsw = join(memory, "memory.memsw.limit_in_bytes");
    const memswExists = await exists(memsw);
    // v1 keeps memsw >= limit at every step: raise memsw first when growing, the limit first when shrinking.
    try {
      await write(join(memory, "memory.limit_in_bytes"), limits.memoryBytes);
      if (memswExists) await write(memsw, limits.memoryBytes);
    } catch (error) {
      if (!memswExists) throw error;
      await write(memsw, limits.memoryBytes);
      await write(join(memory, "memory.limit_in_bytes"), limits.memoryBytes);
    }
    await write(join(this.leaf("pids", "user"), "pids.max"), limits.maxProcesses);
    await write(join(this.leaf("cpu", "user"), "cpu.shares"), 1024);
    const cpu = this.groups.cpu as string;
    await write(join(cpu, "cpu.cfs_period_us"), CPU_PERIOD_US);
    await write(join(cpu, "cpu.cfs_quota_us"), quotaUs);
  }

  /** Host pids of every process in the sandbox. */
  async pids(): Promise<number[]> {
    // The v1 freezer group holds every process: nothing inside can write to it.
    const files = this.groups.freezer
      ? [join(this.groups.freezer, "cgroup.procs")]
      : this.leafControllers.flatMap((c) => [
          join(this.leaf(c, "runner"), "cgroup.procs"),
          join(this.leaf(c, "user"), "cgroup.procs"),
        ]);
    const all = new Set<number>();
    for (const file of files) for (const pid of await readPids(file)) all.add(pid);
    return [...all].sort((a, b) => a - b);
  }

  async signal(signal: NodeJS.Signals): Promise<void> {
    signalPids(await this.pids(), signal);
  }

  /** SIGKILLs every process until the groups are empty (or `timeoutMs` passes); groups removed meanwhile are empty. */
  async kill(timeoutMs = 10_000): Promise<void> {
    try {
      await this.killUntilEmpty(timeoutMs);
    } catch (error) {
      // Removed by a concurrent destroy, which removes groups only once they are empty.
      if (!isRemovedCgroup(error)) throw error;
    }
  }

  private async killUntilEmpty(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const killFile = this.version === 2 ? join(this.groups.unified as string, "cgroup.kill") : undefined;
    for (;;) {
      const pids = await this.pids();
      if (pids.length === 0) return;
      if (Date.now() > deadline) throw new Error(`sandbox processes survived SIGKILL: ${pids.join(" ")}`);
      if (killFile && (await exists(killFile))) {
        await write(killFile, 1);
      } else if (this.groups.freezer) {
        // Frozen, nothing can fork between reading the list and killing it.
        const freezer = this.groups.freezer;
        await write(join(freezer, "freezer.state"), "FROZEN");
        for (let i = 0; i < 100 && (await readFile(join(freezer, "freezer.state"), "utf8")).trim() !== "FROZEN"; i++) {
          await sleep(1);
        }
        signalPids(await this.pids(), "SIGKILL");
        await write(join(freezer, "freezer.state"), "THAWED");
      } else {
        signalPids(pids, "SIGKILL");
      }
      await sleep(5);
    }
  }

  /** Removes leaves then groups; call once they are empty. Missing dirs are fine. */
  async remove(): Promise<void> {
    for (const [controller, group] of Object.entries(this.groups)) {
      const dirs =
        controller === "freezer" ? [group] : [this.leaf(controller, "runner"), this.leaf(controller, "user"), group];
      for (const dir of dirs) await removeCgroupDir(dir);
    }
  }
}

const CGROUP_FS_TYPES = new Set([0x27e0eb, 0x63677270]);

/** rmdir with a few retries: a killed process may take a moment to leave its cgroup. */
async function removeCgroupDir(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      // Only a fake cgroupfs (a plain directory, in tests) holds files that rmdir does not remove.
      if (code === "ENOTEMPTY" && !CGROUP_FS_TYPES.has((await statfs(dir)).type)) {
        await rm(dir, { recursive: true });
        return;
      }
      if (attempt >= 50 || code !== "EBUSY") throw error;
      await sleep(20);
    }
  }
}
