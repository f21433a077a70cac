import { type ChildProcess, spawn } from "node:child_process";
import { Code, ConnectError } from "@connectrpc/connect";

/** How to start a program. */
export interface SpawnSpec {
  /** The program and its arguments; the program is looked up in the PATH of `env`. */
  argv: string[];
  env: Record<string, string>;
  /** The real path of the working directory. */
  cwd: string;
  /** Whether stdin is a pipe; otherwise it reads /dev/null. */
  stdin: boolean;
}

/**
 * Starts a program in its own session and process group (`detached`), so that a timeout or a
 * group signal reaches everything it started, and a terminal signal meant for the runner never
 * does. Returns at once: `pid` is undefined when the program could not be started, and
 * {@link spawnFailure} then tells why.
 */
export function spawnChild(spec: SpawnSpec): ChildProcess {
  const [program = "", ...args] = spec.argv;
  return spawn(program, args, {
    cwd: spec.cwd,
    env: spec.env,
    stdio: [spec.stdin ? "pipe" : "ignore", "pipe", "pipe"],
    detached: true,
  });
}

/** The error of a child that {@link spawnChild} could not start, as the contract names it. */
export function spawnFailure(child: ChildProcess, program: string): Promise<ConnectError> {
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
