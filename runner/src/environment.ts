import type { RunnerContext } from "./context.js";
import { egressProxyEnvironment } from "./egress.js";

/** Variables of the runner's own environment that programs in the workspace inherit. */
const inherited = ["PATH", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/**
 * The environment programs in the workspace start from: a few well-known variables of the
 * runner's own environment (never its configuration or secrets), the workspace user's
 * home, the terminal type, and where the workspace is; `extra` is added last and wins.
 */
export function workspaceEnvironment(ctx: RunnerContext, extra: Record<string, string> = {}): Record<string, string> {
  const { workspace, replId } = ctx;
  const env: Record<string, string> = {};
  for (const name of inherited) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  if (ctx.config.home) env.HOME = ctx.config.home;
  env.PATH ??= "/usr/local/bin:/usr/bin:/bin";
  env.LANG ??= "C.UTF-8";
  env.TERM = "xterm-256color";
  env.COLORTERM = "truecolor";
  env.DEVEX_WORKSPACE = workspace;
  env.DEVEX_REPL_ID = replId;
  // Outbound access, when the repl has any, goes through core's allowlist proxy.
  if (ctx.config.egressSocket) Object.assign(env, egressProxyEnvironment());
  return { ...env, ...extra };
}

/** The shell that sessions without a command run, as a login shell. */
export function defaultShell(): string[] {
  return [process.env.SHELL || "/bin/bash", "-l"];
}
