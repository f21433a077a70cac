import {
  booleanSchema,
  bytesSchema,
  ConfigError,
  type ConfigOf,
  durationMsSchema,
  integerSchema,
  type LoadConfigOptions,
  optional,
  patternSchema,
  serverSettings,
  setting,
  textSchema,
  withDefault,
} from "@devex/kit";

/** Repl ids, as core issues them. */
export const replIdPattern = /^repl_[0-9a-z]{26}$/;

/** Every setting of the runner; `npm run runner -- --help` prints them. */
export const runnerSettings = {
  ...serverSettings("runner", 8082),
  workspace: setting({
    flag: "workspace",
    env: "DEVEX_RUNNER_WORKSPACE",
    schema: withDefault(textSchema, ".devex/runner/workspace"),
    description: "The workspace directory this runner serves (created if missing). Default .devex/runner/workspace.",
  }),
  home: setting({
    flag: "home",
    env: "DEVEX_RUNNER_HOME",
    schema: optional(textSchema),
    description: "HOME of the programs the runner starts (the workspace user's home). Default: the runner's own HOME.",
  }),
  replId: setting({
    flag: "repl-id",
    env: "DEVEX_REPL_ID",
    schema: optional(patternSchema(replIdPattern, "must be a repl id: repl_ and 26 lower-case letters or digits")),
    description: "The repl this runner serves: tokens must be issued for it. Required unless --dev.",
  }),
  tokenPublicKey: setting({
    flag: "token-public-key",
    env: "DEVEX_RUNNER_TOKEN_PUBLIC_KEY",
    schema: optional(textSchema),
    description: "Core's Ed25519 public key (SPKI PEM text, or a path to a PEM file). Required unless --dev.",
  }),
  standby: setting({
    flag: "standby",
    env: "DEVEX_RUNNER_STANDBY",
    boolean: true,
    schema: withDefault(booleanSchema, false),
    description:
      "Start warm without a repl, then wait for one assignment on stdin: a JSON line {replId, workspace, home}. Needs --token-public-key; not with --repl-id, --workspace or --dev.",
  }),
  dev: setting({
    flag: "dev",
    env: "DEVEX_RUNNER_DEV",
    boolean: true,
    schema: withDefault(booleanSchema, false),
    description: "Standalone development mode: makes a key pair (and a repl id if none) and prints tokens it accepts.",
  }),
  scrollbackBytes: setting({
    flag: "scrollback-bytes",
    env: "DEVEX_RUNNER_SCROLLBACK_BYTES",
    schema: withDefault(bytesSchema(256 * 1024, 64 * 1024 * 1024), 1024 * 1024),
    description: "Terminal output kept per session for replay on reattach, in bytes (at least 256 KiB). Default 1 MiB.",
  }),
  detachedSessionLifetimeMs: setting({
    flag: "detached-session-lifetime-ms",
    env: "DEVEX_RUNNER_DETACHED_SESSION_LIFETIME_MS",
    schema: withDefault(durationMsSchema(1_000, 7 * 24 * 3_600_000), 5 * 60_000),
    description:
      "How long a terminal session with no client lives on, in ms, unless it asks otherwise. Default 300000.",
  }),
  maxSessions: setting({
    flag: "max-sessions",
    env: "DEVEX_RUNNER_MAX_SESSIONS",
    schema: withDefault(integerSchema(1, 10_000), 100),
    description: "Terminal sessions allowed at once. Default 100.",
  }),
  maxProcesses: setting({
    flag: "max-processes",
    env: "DEVEX_RUNNER_MAX_PROCESSES",
    schema: withDefault(integerSchema(1, 10_000), 256),
    description: "Processes (started through ProcessService) allowed at once. Default 256.",
  }),
  processOutputCapBytes: setting({
    flag: "process-output-cap-bytes",
    env: "DEVEX_RUNNER_PROCESS_OUTPUT_CAP_BYTES",
    schema: withDefault(bytesSchema(4 * 1024, 1024 * 1024 * 1024), 1024 * 1024),
    description: "Recent output kept per process (each of stdout and stderr) for reattach, in bytes. Default 1 MiB.",
  }),
  exitRetentionMs: setting({
    flag: "exit-retention-ms",
    env: "DEVEX_RUNNER_EXIT_RETENTION_MS",
    schema: withDefault(durationMsSchema(60_000, 24 * 3_600_000), 5 * 60_000),
    description:
      "How long an exited process or session stays listed with its exit status, in ms (at least 60000). Default 300000.",
  }),
  keepaliveMs: setting({
    flag: "keepalive-ms",
    env: "DEVEX_RUNNER_KEEPALIVE_MS",
    schema: withDefault(durationMsSchema(100, 30_000), 25_000),
    description: "Silence after which a stream gets a keepalive message, in ms (at most 30000). Default 25000.",
  }),
};

/** The runner's validated configuration. */
export type RunnerConfig = ConfigOf<typeof runnerSettings>;

/**
 * Checks what no single setting can tell about a standby (`--standby`): it learns its repl
 * and workspace from its assignment, so they must not be given as well, and it serves
 * core's tokens, so it needs core's key. `source` is where the configuration was read
 * from, to tell a workspace given from the default one. Undefined when all is well.
 */
export function standbyConfigError(config: RunnerConfig, source: LoadConfigOptions = {}): ConfigError | undefined {
  if (!config.standby) return undefined;
  const argv = source.argv ?? process.argv.slice(2);
  const env = source.env ?? process.env;
  const given = (s: { flag: string; env: string }) =>
    argv.some((arg) => arg === `--${s.flag}` || arg.startsWith(`--${s.flag}=`)) || Boolean(env[s.env]);
  const problems: string[] = [];
  for (const s of [runnerSettings.replId, runnerSettings.workspace]) {
    if (given(s)) problems.push(`  --${s.flag} (${s.env}): not with --standby, whose assignment names it`);
  }
  if (config.dev) problems.push("  --dev (DEVEX_RUNNER_DEV): not with --standby, which serves core's tokens");
  if (!config.tokenPublicKey) {
    problems.push("  --token-public-key (DEVEX_RUNNER_TOKEN_PUBLIC_KEY): required with --standby");
  }
  return problems.length > 0 ? new ConfigError(`invalid configuration:\n${problems.join("\n")}`) : undefined;
}
