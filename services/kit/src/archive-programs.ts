import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import { access, constants } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { createInterface } from "node:readline";

/** How a program of an archive pipeline ended. */
export interface ProgramExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the program could not be started at all (not on PATH, say). */
  error?: Error;
}

/** Bytes of a program's standard error kept for error messages. */
const maxMessageBytes = 4096;

/**
 * A program (tar, zstd) started for an archive pipeline: started without a shell, in the C
 * locale (so that its messages can be recognised), with the variables that would change
 * its behaviour behind our back (TAR_OPTIONS, ZSTD_CLEVEL, ZSTD_NBTHREADS) removed.
 */
export class Program {
  readonly child: ChildProcess;
  /** Resolves once the program has exited and its pipes are closed; never rejects. */
  readonly exited: Promise<ProgramExit>;
  private messages = "";
  private flaggedLine: string | undefined;

  /**
   * Starts `name`. Every line it writes to standard error is tested against `flag`: see
   * {@link Program.flagged}.
   */
  constructor(
    readonly name: string,
    args: string[],
    stdio: StdioOptions,
    private readonly flag?: RegExp,
  ) {
    this.child = spawn(name, args, { stdio, env: programEnvironment() });
    this.exited = new Promise((resolve) => {
      this.child.once("error", (error) => resolve({ code: null, signal: null, error }));
      this.child.once("close", (code, signal) => resolve({ code, signal }));
    });
    if (this.child.stderr) {
      createInterface({ input: this.child.stderr, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) =>
        this.onMessage(line),
      );
    }
  }

  /** The first line of standard error that matched the `flag` pattern, if any did. */
  get flagged(): string | undefined {
    return this.flaggedLine;
  }

  /** Kills the program (SIGKILL) unless it has exited; {@link Program.exited} tells when it is gone. */
  kill(): void {
    if (this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGKILL");
    }
  }

  /** Why the program failed, for an error message: its exit status and what it said. */
  describe(exit: ProgramExit): string {
    const how = exit.error
      ? `could not be started (${exit.error.message})`
      : exit.signal
        ? `was killed by ${exit.signal}`
        : `exited with status ${exit.code}`;
    const said = this.messages.trim();
    return said ? `${this.name} ${how}: ${said}` : `${this.name} ${how}`;
  }

  private onMessage(line: string): void {
    if (this.flaggedLine === undefined && this.flag?.test(line)) this.flaggedLine = line;
    if (this.messages.length < maxMessageBytes) this.messages += `${line.slice(0, maxMessageBytes)}\n`;
  }
}

function programEnvironment(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: "C" };
  delete env.TAR_OPTIONS;
  delete env.ZSTD_CLEVEL;
  delete env.ZSTD_NBTHREADS;
  return env;
}

let zstdProgram: Promise<boolean> | undefined;

/** Whether an executable `zstd` is on PATH (looked up once per process). */
export function hasZstdProgram(): Promise<boolean> {
  zstdProgram ??= (async () => {
    for (const dir of (process.env.PATH ?? "").split(delimiter).filter(Boolean)) {
      try {
        await access(join(dir, "zstd"), constants.X_OK);
        return true;
      } catch {
        // not in this directory
      }
    }
    return false;
  })();
  return zstdProgram;
}
