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
    const child = spawnDetached(spec.argv, spec, false);
    if (child.pid === undefined) throw await spawnFailure(child, program);
    return child as StartedChild;
  }
  // Behind the shim, a missing program would show only as exit status 127.
  await assertExecutable(program, spec.cwd, spec.env.PATH ?? "");
  const child = spawnDetached(cgroupShimCommand(spec.cgroups, spec.argv, "status-fd"), spec, true);
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

/** Spawns `argv` as `spec` says; `statusPipe` adds a pipe on descriptor 3 (the shim's status). */
function spawnDetached(argv: string[], spec: SpawnSpec, statusPipe: boolean): ChildProcess {
  const [program = "", ...args] = argv;
  return spawn(program, args, {
    cwd: spec.cwd,
    env: spec.env,
    stdio: [spec.stdin ? "pipe" : "ignore", "pipe", "pipe", ...(statusPipe ? ["pipe" as const] : [])],
    detached: true,
  });
}

/** The error of a child that could not be spawned (its `pid` is undefined), as the contract names it. */
function spawnFailure(child: ChildProcess, program: string): Promise<ConnectError> {
  return new Promise((resolve) => {
    child.once("error", (error: NodeJS.ErrnoException) => {
      const code = error.code ?? "unknown error";
      switch (code) {
        case "ENOENT":
          resolve(new ConnectError(`executable "${program}" not found`, Code.NotFound, undefined, undefined, error));
          return;
        case "EAGAIN":
        case "ENOMEM":
          resolve(
            new ConnectError(`cannot start "${program}": ${code}`, Code.ResourceExhausted, undefined, undefined, error),
          );
          return;
        default:
          // EACCES, ENOEXEC, EISDIR, E2BIG...: the program exists but cannot be run like this.
          resolve(
            new ConnectError(`cannot run "${program}": ${code}`, Code.FailedPrecondition, undefined, undefined, error),
          );
      }
    });
  });
}
