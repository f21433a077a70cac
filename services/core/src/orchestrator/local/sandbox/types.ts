import type { ChildProcess, StdioOptions } from "node:child_process";
import type { Logger } from "pino";
import type { RunnerResources } from "../../orchestrator.js";

/**
 * Resource limits of one sandbox: a runner's resources. Memory (RAM, no swap) and processes
 * bound the programs the runner starts, together; CPU bounds the whole sandbox.
 */
export type SandboxLimits = RunnerResources;

/** Options of {@link createSandboxDriver}. */
export interface SandboxDriverOptions {
  kind: "bwrap" | "none";
  /** Host directory holding every sandbox's directories, records and uid leases. */
  root: string;
  /** Extra host paths bound read-only at the same path (bwrap only): Node, the runner bundle... */
  readOnlyPaths: string[];
  /** First host uid leased to sandboxes (default 200000). */
  uidBase?: number;
  /** How many uids may be leased (default 65536). */
  uidCount?: number;
  /**
   * Parent of every sandbox's cgroup (default "devex"). Relative: under core's own cgroup in each
   * hierarchy, so limits set on core cover its sandboxes; absolute ("/devex"): from the hierarchy root.
   */
  cgroupParent?: string;
  /** Where cgroup hierarchies are mounted (default /sys/fs/cgroup); tests point it at a fake tree. */
  cgroupRoot?: string;
  /** Memory cap of the runner leaf (default 1 GiB): generous, only there to stop a runaway runner. */
  runnerMemoryBytes?: number;
  /** Process/thread cap of the runner leaf (default 512). */
  runnerMaxProcesses?: number;
  logger: Logger;
}

/** Host directories of a sandbox and where they appear inside it. */
export interface SandboxDirs {
  workspace: string;
  home: string;
  tmp: string;
  /** Where the runner puts its Unix sockets; core connects to them from the host. */
  run: string;
}

/** Options of {@link Sandbox.spawn}. */
export interface SandboxSpawnOptions {
  env: Record<string, string>;
  stdio: StdioOptions;
}

/** One repl's sandbox: a uid, its directories, its cgroups and the processes in it. */
export interface Sandbox {
  readonly id: string;
  readonly uid: number;
  readonly gid: number;
  readonly hostDirs: SandboxDirs;
  readonly innerDirs: SandboxDirs;
  /** Inside paths for the runner's `--process-cgroups`; [] for the none driver. */
  readonly userCgroupDirs: string[];
  /**
   * Starts argv[0] inside the sandbox as its uid, in the runner leaf; own process group
   * (detached). HOME and TMPDIR are the sandbox's (bwrap adds PATH, USER, LOGNAME and SHELL
   * of its user) unless `env` sets them.
   */
  spawn(argv: string[], options: SandboxSpawnOptions): ChildProcess;
  setLimits(limits: SandboxLimits): Promise<void>;
  /** Pids (host pid namespace) of every process in the sandbox (for none: the spawned process groups). */
  pids(): Promise<number[]>;
  /** Sends a signal to every process. */
  signal(signal: NodeJS.Signals): Promise<void>;
  /** SIGKILLs every process until none is left. */
  kill(): Promise<void>;
  /** Kills, removes the cgroups and the uid lease, and the host directories unless `keepDirs`. */
  destroy(options?: { keepDirs?: boolean }): Promise<void>;
}

/** Creates and reopens sandboxes of one kind. */
export interface SandboxDriver {
  readonly kind: "bwrap" | "none";
  /** Throws a {@link SandboxSetupError} when this machine cannot run this kind of sandbox. */
  check(): Promise<void>;
  create(id: string, limits: SandboxLimits): Promise<Sandbox>;
  /** Reopens a sandbox after a core restart, from its record under the root. */
  open(id: string): Promise<Sandbox | undefined>;
  /** Ids of the sandboxes with a record. */
  list(): Promise<string[]>;
}

/** This machine or configuration cannot run sandboxes; the message names the cause and the fix. */
export class SandboxSetupError extends Error {
  override name = "SandboxSetupError";
}

/** `sbx_` and 12 lowercase base32 characters: short, so socket paths stay short. */
export const SANDBOX_ID_PATTERN = /^sbx_[a-z2-7]{12}$/;
