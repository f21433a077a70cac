import { access, constants } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";

/** The shell that runs the shim: POSIX sh, present in every image the runner runs in. */
const shimShell = "/bin/sh";
/** The shim's $0, which the shell puts in front of its own error messages. */
const shimName = "devex-cgroup";
/** The line the shim reports on its status descriptor when it could not enter a cgroup. */
const failedMarker = "devex-cgroup-failed";

/** Where the shim reports a failed cgroup write. */
export type ShimReport =
  /** On descriptor 3, a pipe the runner reads: nothing before the exec means success. */
  | "status-fd"
  /** On stderr, for a PTY, which has no other descriptor to give the child. */
  | "stderr";

/**
 * The command that runs `argv` inside the cgroups `dirs` (each a cgroup directory of the
 * repl, one per controller hierarchy on cgroup v1, one on v2): a `/bin/sh` that writes 0
 * (itself) into each `<dir>/cgroup.procs`, then `exec`s `argv` unchanged, so the program
 * keeps the shim's pid (signals and the exit status are the program's own), starts inside
 * every limit, and its children inherit the cgroups. If a write fails the shell exits 125
 * without running the program, after reporting which directory failed and why as `report`
 * says. The program is looked up in PATH by the shell's `exec`, as `spawn` would.
 */
export function cgroupShimCommand(dirs: readonly string[], argv: readonly string[], report: ShimReport): string[] {
  const out = report === "status-fd" ? 3 : 2;
  const failed =
    report === "status-fd"
      ? `echo "${failedMarker} $1" >&3`
      : `echo "devex: cannot enter the repl's cgroup $1: the program was not started" >&2`;
  const script = [
    "n=$1; shift",
    'while [ "$n" -gt 0 ]; do',
    // A brace group, not a subshell: the shell itself must write, "0" means the writer.
    `  { echo 0 > "$1/cgroup.procs"; } 2>&${out} || { ${failed}; exit 125; }`,
    "  shift; n=$((n - 1))",
    "done",
    ...(report === "status-fd" ? ["exec 3>&-"] : []),
    'exec "$@"',
  ].join("\n");
  return [shimShell, "-c", script, shimName, String(dirs.length), ...dirs, ...argv];
}

/**
 * Waits for the shim's verdict on its status descriptor (see {@link cgroupShimCommand}):
 * resolves once the shim closed it to exec the program, fails with FAILED_PRECONDITION,
 * naming the directory and the cause, when it could not enter a cgroup (the program then
 * never ran).
 */
export async function awaitCgroupShim(status: Readable, program: string): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of status) chunks.push(chunk as Buffer);
  const report = Buffer.concat(chunks).toString("utf8").trim();
  if (report === "") return;
  const lines = report.split("\n");
  const marker = lines.findLast((line) => line.startsWith(`${failedMarker} `));
  const dir = marker?.slice(failedMarker.length + 1) ?? "?";
  // dash says "devex-cgroup: 3: cannot create …" or "devex-cgroup: 3: echo: echo: I/O error":
  // its name, the line number and the builtin's name say nothing here.
  const cause = lines
    .filter((line) => line !== marker)
    .map((line) => line.replace(new RegExp(`^${shimName}: (line )?\\d+: (echo: )*`), ""))
    .join("; ");
  throw cgroupError(dir, cause || "write failed", program);
}

/**
 * Fails with FAILED_PRECONDITION unless the runner may write `<dir>/cgroup.procs` in each
 * of `dirs`. A check before spawning into a PTY, whose shim can only report on the
 * terminal; the shim's own write stays the guarantee.
 */
export async function assertCgroupsWritable(dirs: readonly string[], program: string): Promise<void> {
  for (const dir of dirs) {
    try {
      await access(join(dir, "cgroup.procs"), constants.W_OK);
    } catch (error) {
      throw cgroupError(dir, (error as NodeJS.ErrnoException).code ?? String(error), program, error);
    }
  }
}

function cgroupError(dir: string, cause: string, program: string, error?: unknown): ConnectError {
  return new ConnectError(
    `cannot start "${program}" inside the repl's limits: writing ${join(dir, "cgroup.procs")} failed (${cause}); it was not started`,
    Code.FailedPrecondition,
    undefined,
    undefined,
    error,
  );
}
