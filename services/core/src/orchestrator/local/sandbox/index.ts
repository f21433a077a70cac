/**
 * Sandbox primitives of the local orchestrator: create, enter, limit, kill and destroy the sandbox
 * each repl's runner (and everything it starts) lives in. `bwrap`: bubblewrap namespaces, a leased
 * uid, cgroups and seccomp; `none`: the same interface without isolation.
 */
import { BwrapSandboxDriver } from "./bwrap.js";
import { NoneSandboxDriver } from "./none.js";
import type { SandboxDriver, SandboxDriverOptions } from "./types.js";

export { closedAncestor, newSandboxId } from "./layout.js";
export type {
  Sandbox,
  SandboxDirs,
  SandboxDriver,
  SandboxDriverOptions,
  SandboxLimits,
  SandboxSpawnOptions,
} from "./types.js";
export { SANDBOX_ID_PATTERN, SandboxSetupError } from "./types.js";

/** Creates the driver of `options.kind`; call `check()` at start-up to fail early with a clear message. */
export function createSandboxDriver(options: SandboxDriverOptions): SandboxDriver {
  return options.kind === "bwrap" ? new BwrapSandboxDriver(options) : new NoneSandboxDriver(options);
}
