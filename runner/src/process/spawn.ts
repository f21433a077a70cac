import { type ChildProcess, spawn } from "node:child_process";
import type { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { assertExecutable } from "../executable.js";
import { awaitCgroupShim, cgroupShimCommand } from "../process-cgroups.js";

/** How to start a program. */
export interface SpawnSpec {
  /** The program and its arguments; the program is looked up in the PATH of `env`. */
  argv: string[];
  env: Record<string, string>;
  /** The real path of the working directory. */
  cwd: string;
  /** Whether stdin is a pipe; otherwise it reads /dev/null. */
  stdin: boolean;
  /**
   * Cgroup directories the program must start in (`--process-cgroups`); none means the
   * runner's own. See {@link cgroupShimCommand}.
   */
  cgroups: readonly string[];
}

/** A child that started: it has a pid. */
export type StartedChild = ChildProcess & { pid: number };

/**
 * Starts a program in its own session and process group (`detached`), so that a timeout or a
 * group signal reaches everything it started, and a terminal signal meant for the runner never
 * does; inside its cgroups if it has any. Resolves once the program runs (behind the cgroup
 * shim its exec may still fail if the program changed meanwhile: it then exits with 126 or
 * 127). Errors: NOT_FOUND or FAILED_PRECONDITION when the program cannot be started;
 * FAILED_PRECONDITION when it cannot enter a cgroup, in which case it never ran.
 */
export async function startChild(spec: SpawnSpec): Promise<StartedChild> {
  const program = spec.argv[0] ?? "";
  if (spec.cgroups.length === 0) {
    const child = spawnDetached(spec.argv, spec, false, program);
    if (child.pid === undefined) throw await spawnFailure(child, program);
    return child as StartedChild;
  }
  // Behind the shim, a missing program would show only as exit status 127.
  await assertExecutable(program, spec.cwd, spec.env.PATH ?? "");
  const child = spawnDetached(cgroupShimCommand(spec.cgroups, spec.argv, "status-fd"), spec, true, program);
  if (child.pid === undefined) throw await spawnFailure(child, "/bin/sh");
  try {
    await awaitCgroupShim(child.stdio[3] as Readable, program);
  } catch (error) {
    // The shim exits by itself; its pipes are drained so that nothing holds them open.
    child.stdout?.resume();
    child.stderr?.resume();
    throw error;
  }
  return child as StartedChild;
}

/**
 * Spawns `argv` as `spec` says; `statusPipe` adds a pipe on descriptor 3 (the shim's status).
 * Node throws at once for the errors it does not expect (E2BIG, ENAMETOOLONG): they are
 * mapped like the ones it reports later, naming `program`.
 */
function spawnDetached(argv: string[], spec: SpawnSpec, statusPipe: boolean, program: string): ChildProcess {
  const [file = "", ...args] = argv;
  try {
    return spawn(file, args, {
      cwd: spec.cwd,
      env: spec.env,
      stdio: [spec.stdin ? "pipe" : "ignore", "pipe", "pipe", ...(statusPipe ? ["pipe" as const] : [])],
      detached: true,
    });
  } catch (error) {
    throw spawnError(error as NodeJS.ErrnoException, program);
  }
}

/** The error of a child that could not be spawned (its `pid` is undefined), as the contract names it. */
function spawnFailure(child: ChildProcess, program: string): Promise<ConnectError> {
  return new Promise((resolve) => {
    child.once("error", (error: NodeJS.ErrnoException) => resolve(spawnError(error, program)));
  });
}

/** What a spawn errno means for the caller: its code, and its message given the quoted program. */
const byErrno: Record<string, [Code, (program: string) => string]> = {
  ENOENT: [Code.NotFound, (program) => `executable ${program} not found`],
  EAGAIN: [Code.ResourceExhausted, (program) => `cannot start ${program}: EAGAIN`],
  ENOMEM: [Code.ResourceExhausted, (program) => `cannot start ${program}: ENOMEM`],
  // Limits Linux enforces on execve: the request is what is wrong, whatever the program.
  E2BIG: [
    Code.InvalidArgument,
    (program) =>
      `cannot run ${program}: an argument or environment variable is over Linux's limit of 131,071 bytes, or all of them are over the total (about 2 MiB): E2BIG`,
  ],
  ENAMETOOLONG: [
    Code.InvalidArgument,
    (program) =>
      `cannot run ${program}: the program's path is over Linux's limit (4,095 bytes, 255 per path component): ENAMETOOLONG`,
  ],
};

/** Maps a spawn error to a ConnectError; EACCES, ENOEXEC, EISDIR...: the program exists but cannot be run like this. */
function spawnError(error: NodeJS.ErrnoException, program: string): ConnectError {
  const code = error.code ?? "unknown error";
  // A name over a limit is not echoed whole.
  const quoted = JSON.stringify(program.length > 256 ? `${program.slice(0, 256)}…` : program);
  const [connectCode, phrase] = byErrno[code] ?? [Code.FailedPrecondition, (p: string) => `cannot run ${p}: ${code}`];
  return new ConnectError(phrase(quoted), connectCode, undefined, undefined, error);
}
