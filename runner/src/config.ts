import {
  booleanSchema,
  bytesSchema,
  ConfigError,
  type ConfigOf,
  durationMsSchema,
  integerSchema,
  optional,
  patternSchema,
  portSchema,
  serverSettings,
  setting,
  textSchema,
  withDefault,
} from "@devex/kit";

/** Repl ids, as core issues them. */
export const replIdPattern = /^repl_[0-9a-z]{26}$/;

/** Standby ids, as core issues them: the audience of the tokens of a standby's Assign. */
export const standbyIdPattern = /^[0-9A-Za-z][0-9A-Za-z_.-]{0,127}$/;

/** Every setting of the runner; `npm run runner -- --help` prints them. */
export const runnerSettings = {
  ...serverSettings("runner", 8082),
  socket: setting({
    flag: "socket",
    env: "DEVEX_RUNNER_SOCKET",
    schema: optional(textSchema),
    description:
      "Listen on this Unix socket (made 0600) instead of a TCP port: how core reaches a runner in its sandbox. --port and --host are then ignored.",
  }),
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
    description: "The repl this runner serves: tokens must be issued for it. Required unless --dev or --standby.",
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
      "Start warm without a repl: serve only health, reflection and RunnerService.Assign (core's tokens for --standby-id) until core assigns a repl, then serve it. Needs --standby-id, --socket and --token-public-key; not with --repl-id or --dev.",
  }),
  standbyId: setting({
    flag: "standby-id",
    env: "DEVEX_RUNNER_STANDBY_ID",
    schema: optional(
      patternSchema(
        standbyIdPattern,
        "must be 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit",
      ),
    ),
    description: "The id core gave this standby: its Assign takes core tokens issued for it. Only with --standby.",
  }),
  processCgroups: setting({
    flag: "process-cgroups",
    env: "DEVEX_RUNNER_PROCESS_CGROUPS",
    schema: optional(
      patternSchema(/^\/[^,]*(,\/[^,]*)*$/, "must be absolute cgroup directory paths separated by commas"),
    ),
    description:
      "Cgroup directories (comma-separated, one per hierarchy) that every program the runner starts for the user enters before it runs; a program that cannot enter them is not started. Default: none (the runner's own cgroup).",
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
  previewSocket: setting({
    flag: "preview-socket",
    env: "DEVEX_RUNNER_PREVIEW_SOCKET",
    schema: optional(textSchema),
    description:
      "A Unix socket on which the preview proxy serves the repl's web ports to core (x-devex-preview-port names the port). Default: no preview proxy unless --preview-port.",
  }),
  previewPort: setting({
    flag: "preview-port",
    env: "DEVEX_RUNNER_PREVIEW_PORT",
    schema: optional(portSchema),
    description:
      "A loopback TCP port for the preview proxy instead of --preview-socket (0 picks one), for development. Default none.",
  }),
  egressSocket: setting({
    flag: "egress-socket",
    env: "DEVEX_RUNNER_EGRESS_SOCKET",
    schema: optional(textSchema),
    description:
      "A Unix socket of core's egress proxy (--sandbox-network allowlist): the runner forwards 127.0.0.1:3128 in the sandbox to it and points programs' HTTP_PROXY/HTTPS_PROXY there. Default: no outbound access.",
  }),
  maxWatches: setting({
    flag: "max-watches",
    env: "DEVEX_RUNNER_MAX_WATCHES",
    schema: withDefault(integerSchema(1, 10_000), 64),
    description:
      "Watch streams (FilesystemService.Watch) open at once; more are refused with RESOURCE_EXHAUSTED. Default 64.",
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

/** The directories of `--process-cgroups`, in order; empty when not set. */
export function processCgroupDirs(config: RunnerConfig): string[] {
  return config.processCgroups ? config.processCgroups.split(",") : [];
}

/**
 * Checks what no single setting can tell about a standby (`--standby`): it learns its repl
 * from Assign, so no repl id may be given; core reaches it on its socket with tokens for
 * its standby id, so it needs both and core's key; it serves core's tokens, so not --dev.
 * Its workspace and home are given up front (the sandbox's fixed paths). A standby id
 * without --standby is refused too. Undefined when all is well.
 */
export function standbyConfigError(config: RunnerConfig): ConfigError | undefined {
  const problems: string[] = [];
  const flag = (s: { flag: string; env: string }) => `--${s.flag} (${s.env})`;
  if (!config.standby) {
    if (config.standbyId) problems.push(`  ${flag(runnerSettings.standbyId)}: only with --standby`);
  } else {
    if (config.replId)
      problems.push(`  ${flag(runnerSettings.replId)}: not with --standby, which Assign gives its repl`);
    if (config.dev) problems.push(`  ${flag(runnerSettings.dev)}: not with --standby, which serves core's tokens`);
    for (const key of ["standbyId", "socket", "tokenPublicKey"] as const) {
      if (!config[key]) problems.push(`  ${flag(runnerSettings[key])}: required with --standby`);
    }
  }
  return problems.length > 0 ? new ConfigError(`invalid configuration:\n${problems.join("\n")}`) : undefined;
}
