import { execFile } from "node:child_process";
import { access, rename } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { SandboxSetupError } from "./types.js";

const run = promisify(execFile);

/** The filter's source: a small Python script using libseccomp, kept next to this module. */
export const SECCOMP_SCRIPT = fileURLToPath(new URL("./seccomp-filter.py", import.meta.url));

/** Debian's python3-seccomp is installed for the system Python, not for pyenv or venv shims. */
const PYTHONS = ["/usr/bin/python3", "python3"];

/**
 * Compiles the seccomp filter into `stateDir/seccomp.bpf` and returns its path. Called once per
 * core start: the filter follows the script in the tree and the libseccomp of the machine.
 */
export async function compileSeccompFilter(stateDir: string): Promise<string> {
  const output = join(stateDir, "seccomp.bpf");
  const temp = `${output}.${process.pid}.tmp`;
  let lastError = "";
  for (const python of PYTHONS) {
    if (
      python.startsWith("/") &&
      !(await access(python).then(
        () => true,
        () => false,
      ))
    )
      continue;
    try {
      await run(python, [SECCOMP_SCRIPT, temp], { timeout: 30_000 });
      await rename(temp, output);
      return output;
    } catch (error) {
      const e = error as { stderr?: string; message: string };
      lastError = (e.stderr || e.message).trim().split("\n").pop() ?? "";
    }
  }
  throw new SandboxSetupError(
    `cannot compile the sandbox seccomp filter (${lastError}): install libseccomp's Python bindings ` +
      "('apt-get install python3-seccomp' on Debian/Ubuntu)",
  );
}
