import {
  booleanSchema,
  bytesSchema,
  type ConfigOf,
  corsOriginsSchema,
  durationMsSchema,
  integerSchema,
  oneOfSchema,
  optional,
  portSchema,
  serverSettings,
  setting,
  textSchema,
  withDefault,
} from "@devex/kit";

/** Every setting of core; `npm run core -- --help` prints them. */
export const coreSettings = {
  ...serverSettings("core", 8080),
  dataDir: setting({
    flag: "data-dir",
    env: "DEVEX_DATA_DIR",
    schema: withDefault(textSchema, ".devex/data"),
    description: "Where core keeps its keys, the embedded state and local workspaces. Default .devex/data.",
  }),
  publicUrl: setting({
    flag: "public-url",
    env: "DEVEX_PUBLIC_URL",
    schema: optional(textSchema),
    description: "The URL people reach core at (OAuth callbacks, CSRF origin). Default http://<host>:<port>.",
  }),
  replPort: setting({
    flag: "repl-port",
    env: "DEVEX_REPL_PORT",
    schema: withDefault(portSchema, 8081),
    description:
      "Port of the repl origin: <repl url>/<repl id>/<runner RPC> is routed to the repl's runner. Default 8081.",
  }),
  replPublicUrl: setting({
    flag: "repl-public-url",
    env: "DEVEX_REPL_PUBLIC_URL",
    schema: optional(textSchema),
    description: "The URL people reach the repl origin at. Default http://<host>:<repl port>.",
  }),
  replCallsPerClient: setting({
    flag: "repl-calls-per-client",
    env: "DEVEX_REPL_CALLS_PER_CLIENT",
    schema: withDefault(integerSchema(1, 1_000_000), 256),
    description:
      "Calls one client (one runner token) may have in flight through the repl origin at once; more are refused with resource_exhausted. Default 256.",
  }),
  replCallsPerRepl: setting({
    flag: "repl-calls-per-repl",
    env: "DEVEX_REPL_CALLS_PER_REPL",
    schema: withDefault(integerSchema(1, 1_000_000), 1024),
    description:
      "Calls one repl may have in flight through the repl origin at once, from all its clients; more are refused with resource_exhausted. Default 1024.",
  }),
  previewPort: setting({
    flag: "preview-port",
    env: "DEVEX_PREVIEW_PORT",
    schema: withDefault(portSchema, 8083),
    description:
      "Port of the preview origin, which serves repls' web ports at <port>-<repl id>.<preview domain> (0 disables previews). Default 8083.",
  }),
  previewDomain: setting({
    flag: "preview-domain",
    env: "DEVEX_PREVIEW_DOMAIN",
    schema: withDefault(textSchema, "localhost"),
    description:
      "The domain under which every preview has its own host (browsers resolve *.localhost to this machine). Default localhost.",
  }),
  previewPublicUrl: setting({
    flag: "preview-public-url",
    env: "DEVEX_PREVIEW_PUBLIC_URL",
    schema: optional(textSchema),
    description:
      "The URL people reach previews at, behind a proxy with a wildcard name and certificate (https://preview.example.com: hosts are <port>-<repl id>.preview.example.com, cookies Secure). Default http://<preview domain>:<preview port>.",
  }),
  corsOrigins: setting({
    flag: "cors-origins",
    env: "DEVEX_CORS_ORIGINS",
    schema: optional(corsOriginsSchema),
    description:
      "Web origins whose pages may call the API and the repl origin from a browser with a bearer token: comma-separated origins (https://app.example.com), or * for any. Default none (no CORS).",
  }),
  stateStore: setting({
    flag: "state-store",
    env: "DEVEX_STATE_STORE",
    schema: withDefault(oneOfSchema(["embedded", "redis"]), "embedded"),
    description: "Where state lives: embedded (under the data directory) or redis. Default embedded.",
  }),
  redisUrl: setting({
    flag: "redis-url",
    env: "DEVEX_REDIS_URL",
    schema: withDefault(textSchema, "redis://127.0.0.1:6379"),
    description: "Redis URL when --state-store=redis. Default redis://127.0.0.1:6379.",
  }),
  redisKeyPrefix: setting({
    flag: "redis-key-prefix",
    env: "DEVEX_REDIS_KEY_PREFIX",
    schema: withDefault(textSchema, "devex:"),
    description: "Prefix of every Redis key core writes. Default devex:.",
  }),
  allowVolatileRedis: setting({
    flag: "allow-volatile-redis",
    env: "DEVEX_ALLOW_VOLATILE_REDIS",
    boolean: true,
    schema: withDefault(booleanSchema, false),
    description:
      "Start even when Redis keeps its data in memory only (appendonly no and no save points), so that a restart of Redis loses every user, API key and repl; core warns at start. Default false: core refuses such a Redis.",
  }),
  runnerEntry: setting({
    flag: "runner-entry",
    env: "DEVEX_RUNNER_ENTRY",
    schema: withDefault(textSchema, "runner/dist/main.js"),
    description:
      "The runner bundle the local orchestrator starts (npm run build makes it). Default runner/dist/main.js.",
  }),
  runnerStandbyCount: setting({
    flag: "runner-standby-count",
    env: "DEVEX_RUNNER_STANDBY_COUNT",
    schema: withDefault(integerSchema(0, 8), 1),
    description:
      "Runner processes the local orchestrator keeps started and warmed up ahead of need, so a repl start hands one its repl instead of booting a process (0 to boot one per start). Default 1.",
  }),
  orchestrator: setting({
    flag: "orchestrator",
    env: "DEVEX_ORCHESTRATOR",
    schema: withDefault(oneOfSchema(["local"]), "local"),
    description:
      "Where runners run: local (one sandboxed runner process per running repl on this machine). Default local.",
  }),
  sandbox: setting({
    flag: "sandbox",
    env: "DEVEX_SANDBOX",
    schema: withDefault(oneOfSchema(["bwrap", "none"]), "bwrap"),
    description:
      "How the local orchestrator confines each repl: bwrap (namespaces with bubblewrap, an unprivileged uid per repl, cgroup limits, seccomp; Linux, as root) or none (no isolation at all: only for a trusted laptop, and core warns at start). Default bwrap.",
  }),
  sandboxRoot: setting({
    flag: "sandbox-root",
    env: "DEVEX_SANDBOX_ROOT",
    schema: optional(textSchema),
    description:
      "Where the local orchestrator keeps each sandbox's folders (workspace, home, tmp, sockets); every folder above it must let other uids through. Default <data dir>/sandboxes, or /var/lib/devex/sandboxes/<hash> when the data directory sits in a folder closed to other uids.",
  }),
  sandboxMemoryBytes: setting({
    flag: "sandbox-memory-bytes",
    env: "DEVEX_SANDBOX_MEMORY_BYTES",
    schema: optional(bytesSchema(64 * 1024 * 1024, 1024 * 1024 * 1024 * 1024)),
    description:
      "Memory limit of every repl's programs, in bytes, overriding the template's (at least 64 MiB). Default: the template's, else 1 GiB.",
  }),
  sandboxCpuMillicores: setting({
    flag: "sandbox-cpu-millicores",
    env: "DEVEX_SANDBOX_CPU_MILLICORES",
    schema: optional(integerSchema(100, 256_000)),
    description:
      "CPU limit of every repl, in thousandths of a core (1000 = one core), overriding the template's. Default: the template's, else 1000.",
  }),
  sandboxMaxProcesses: setting({
    flag: "sandbox-max-processes",
    env: "DEVEX_SANDBOX_MAX_PROCESSES",
    schema: optional(integerSchema(16, 65_536)),
    description:
      "Most processes and threads a repl's programs may have at once, overriding the template's. Default: the template's, else 512.",
  }),
  sandboxNetwork: setting({
    flag: "sandbox-network",
    env: "DEVEX_SANDBOX_NETWORK",
    schema: withDefault(oneOfSchema(["none", "allowlist"]), "none"),
    description:
      "Outbound network of repls: none (loopback only) or allowlist (HTTP and HTTPS through core's proxy, to --sandbox-allow-hosts only). Default none.",
  }),
  sandboxAllowHosts: setting({
    flag: "sandbox-allow-hosts",
    env: "DEVEX_SANDBOX_ALLOW_HOSTS",
    schema: optional(textSchema),
    description:
      "With --sandbox-network allowlist: comma-separated host names repls may reach (example: registry.npmjs.org,*.pythonhosted.org; host:port limits the port). Default none.",
  }),
  sandboxUidBase: setting({
    flag: "sandbox-uid-base",
    env: "DEVEX_SANDBOX_UID_BASE",
    schema: withDefault(integerSchema(1_000, 2_000_000_000), 200_000),
    description:
      "First host uid handed to repl sandboxes (one uid per running repl, from a range of 65536 that no host account may use). Default 200000.",
  }),
  templatesDir: setting({
    flag: "templates-dir",
    env: "DEVEX_TEMPLATES_DIR",
    schema: withDefault(textSchema, "templates"),
    description:
      "The folder of repl templates (one folder each, with template.json and files/) that --sync-templates and `npm run templates:sync` copy into the workspace store. Default templates.",
  }),
  syncTemplates: setting({
    flag: "sync-templates",
    env: "DEVEX_SYNC_TEMPLATES",
    schema: withDefault(booleanSchema, true),
    description:
      "Sync --templates-dir into the workspace store when core starts (as `npm run templates:sync` does): true or false; false when templates are synced separately. Default true.",
  }),
  workspaceStore: setting({
    flag: "workspace-store",
    env: "DEVEX_WORKSPACE_STORE",
    schema: withDefault(oneOfSchema(["filesystem", "s3"]), "filesystem"),
    description:
      "Where snapshots and templates are stored: filesystem (a folder, --objects-dir) or s3 (AWS S3, R2, MinIO, Swift s3api). Default filesystem.",
  }),
  objectsDir: setting({
    flag: "objects-dir",
    env: "DEVEX_OBJECTS_DIR",
    schema: optional(textSchema),
    description: "The folder of the filesystem workspace store. Default <data dir>/objects.",
  }),
  s3Endpoint: setting({
    flag: "s3-endpoint",
    env: "DEVEX_S3_ENDPOINT",
    schema: optional(textSchema),
    description: "S3 endpoint URL (MinIO, R2, Swift s3api). Default: AWS for --s3-region.",
  }),
  s3Region: setting({
    flag: "s3-region",
    env: "DEVEX_S3_REGION",
    schema: withDefault(textSchema, "us-east-1"),
    description: "S3 region. Default us-east-1.",
  }),
  s3Bucket: setting({
    flag: "s3-bucket",
    env: "DEVEX_S3_BUCKET",
    schema: withDefault(textSchema, "devex"),
    description: "S3 bucket holding snapshots and templates. Default devex.",
  }),
  s3AccessKeyId: setting({
    flag: "s3-access-key-id",
    env: "DEVEX_S3_ACCESS_KEY_ID",
    schema: optional(textSchema),
    description: "S3 access key id; with --workspace-store=s3 it is required.",
  }),
  s3SecretAccessKey: setting({
    flag: "s3-secret-access-key",
    env: "DEVEX_S3_SECRET_ACCESS_KEY",
    schema: optional(textSchema),
    description: "S3 secret access key (prefer the environment variable); with --workspace-store=s3 it is required.",
  }),
  s3ForcePathStyle: setting({
    flag: "s3-force-path-style",
    boolean: true,
    env: "DEVEX_S3_FORCE_PATH_STYLE",
    schema: withDefault(booleanSchema, false),
    description: "Address the bucket in the path (MinIO, Swift s3api) rather than the host name. Default false.",
  }),
  s3CreateBucket: setting({
    flag: "s3-create-bucket",
    boolean: true,
    env: "DEVEX_S3_CREATE_BUCKET",
    schema: withDefault(booleanSchema, false),
    description: "Create the bucket at start when it does not exist. Default false.",
  }),
  s3RequestTimeoutMs: setting({
    flag: "s3-request-timeout-ms",
    env: "DEVEX_S3_REQUEST_TIMEOUT_MS",
    schema: withDefault(durationMsSchema(100, 600_000), 30_000),
    description:
      "How long an S3 request may wait for an answer (and a transfer may stall) before it fails as unavailable, in ms. Default 30000.",
  }),
  snapshotRetention: setting({
    flag: "snapshot-retention",
    env: "DEVEX_SNAPSHOT_RETENTION",
    schema: withDefault(integerSchema(1, 1000), 10),
    description: "How many snapshots of each repl are kept (the current one always is). Default 10.",
  }),
  devLogin: setting({
    flag: "dev-login",
    env: "DEVEX_DEV_LOGIN",
    boolean: true,
    schema: withDefault(booleanSchema, false),
    description:
      "Enables the dev login (any user name, no password): for the embedded mode on a laptop only. It admits clients on this machine's loopback only (see --dev-login-remote).",
  }),
  devLoginRemote: setting({
    flag: "dev-login-remote",
    env: "DEVEX_DEV_LOGIN_REMOTE",
    boolean: true,
    schema: withDefault(booleanSchema, false),
    description:
      "Lets the dev login admit clients from other addresses than this machine's loopback: anyone who reaches core then signs in as anyone, admins included. For a throwaway machine only.",
  }),
  devApiKey: setting({
    flag: "dev-api-key",
    env: "DEVEX_DEV_API_KEY",
    boolean: true,
    schema: withDefault(booleanSchema, false),
    description: "Creates (once) an admin user `dev` with an API key, and prints the key at start-up.",
  }),
  githubClientId: setting({
    flag: "github-client-id",
    env: "DEVEX_GITHUB_CLIENT_ID",
    schema: optional(textSchema),
    description: "GitHub OAuth app client id; enables GitHub login.",
  }),
  githubClientSecret: setting({
    flag: "github-client-secret",
    env: "DEVEX_GITHUB_CLIENT_SECRET",
    schema: optional(textSchema),
    description: "GitHub OAuth app client secret.",
  }),
  githubUrl: setting({
    flag: "github-url",
    env: "DEVEX_GITHUB_URL",
    schema: withDefault(textSchema, "https://github.com"),
    description: "GitHub's web URL (authorize and token endpoints). Default https://github.com.",
  }),
  githubApiUrl: setting({
    flag: "github-api-url",
    env: "DEVEX_GITHUB_API_URL",
    schema: withDefault(textSchema, "https://api.github.com"),
    description: "GitHub's API URL (user and emails). Default https://api.github.com.",
  }),
  oidcIssuer: setting({
    flag: "oidc-issuer",
    env: "DEVEX_OIDC_ISSUER",
    schema: optional(textSchema),
    description: "OpenID Connect issuer URL (discovery); enables OIDC login.",
  }),
  oidcClientId: setting({
    flag: "oidc-client-id",
    env: "DEVEX_OIDC_CLIENT_ID",
    schema: optional(textSchema),
    description: "OpenID Connect client id.",
  }),
  oidcClientSecret: setting({
    flag: "oidc-client-secret",
    env: "DEVEX_OIDC_CLIENT_SECRET",
    schema: optional(textSchema),
    description: "OpenID Connect client secret.",
  }),
  oidcDisplayName: setting({
    flag: "oidc-display-name",
    env: "DEVEX_OIDC_DISPLAY_NAME",
    schema: withDefault(textSchema, "Single sign-on"),
    description: "The name login pages show for the OIDC provider. Default Single sign-on.",
  }),
  adminUsers: setting({
    flag: "admin-users",
    env: "DEVEX_ADMIN_USERS",
    schema: optional(textSchema),
    description:
      "Comma-separated provider:subject identities (github:12345, oidc:<sub>, dev:alice) made admins at login.",
  }),
  sessionTtlMs: setting({
    flag: "session-ttl-ms",
    env: "DEVEX_SESSION_TTL_MS",
    schema: withDefault(durationMsSchema(60_000, 90 * 86_400_000), 14 * 86_400_000),
    description: "How long a browser session lasts without use, in ms. Default 14 days.",
  }),
  authFailureLimit: setting({
    flag: "auth-failure-limit",
    env: "DEVEX_AUTH_FAILURE_LIMIT",
    schema: withDefault(integerSchema(1, 1_000_000), 20),
    description:
      "Failed logins and bad credentials one client address may send per window before it is refused. Default 20.",
  }),
  authFailureWindowMs: setting({
    flag: "auth-failure-window-ms",
    env: "DEVEX_AUTH_FAILURE_WINDOW_MS",
    schema: withDefault(durationMsSchema(1_000, 86_400_000), 300_000),
    description: "The window of --auth-failure-limit, in ms. Default 300000 (5 minutes).",
  }),
  trustProxy: setting({
    flag: "trust-proxy",
    env: "DEVEX_TRUST_PROXY",
    boolean: true,
    schema: withDefault(booleanSchema, false),
    description: "Take the client address from X-Forwarded-For (only behind a proxy that sets it).",
  }),
  replQuota: setting({
    flag: "repl-quota",
    env: "DEVEX_REPL_QUOTA",
    schema: withDefault(integerSchema(1, 100_000), 20),
    description: "Repls one user may own. Default 20.",
  }),
  idleTimeoutMs: setting({
    flag: "idle-timeout-ms",
    env: "DEVEX_IDLE_TIMEOUT_MS",
    schema: withDefault(durationMsSchema(1_000, 86_400_000), 300_000),
    description: "Default idle timeout of a repl (a repl may set its own), in ms. Default 300000 (5 minutes).",
  }),
  idleCheckIntervalMs: setting({
    flag: "idle-check-interval-ms",
    env: "DEVEX_IDLE_CHECK_INTERVAL_MS",
    schema: withDefault(durationMsSchema(100, 600_000), 15_000),
    description: "How often core asks running runners for their activity, in ms. Default 15000.",
  }),
  replicaLeaseMs: setting({
    flag: "replica-lease-ms",
    env: "DEVEX_REPLICA_LEASE_MS",
    schema: withDefault(durationMsSchema(1_000, 600_000), 15_000),
    description:
      "How long a core replica's lease in the state store lasts without renewal, in ms: another replica takes over the repls of one whose lease ran out. Default 15000.",
  }),
  reconcileIntervalMs: setting({
    flag: "reconcile-interval-ms",
    env: "DEVEX_RECONCILE_INTERVAL_MS",
    schema: withDefault(durationMsSchema(100, 3_600_000), 30_000),
    description: "How often the reconciler compares records with runners, in ms. Default 30000.",
  }),
  startTimeoutMs: setting({
    flag: "start-timeout-ms",
    env: "DEVEX_START_TIMEOUT_MS",
    schema: withDefault(durationMsSchema(1_000, 600_000), 60_000),
    description: "How long a runner may take to become healthy before the start fails, in ms. Default 60000.",
  }),
  stuckTransitionMs: setting({
    flag: "stuck-transition-ms",
    env: "DEVEX_STUCK_TRANSITION_MS",
    schema: optional(durationMsSchema(1_000, 86_400_000)),
    description:
      "How old a start, stop or deletion must be before the reconciler takes it over from a worker that may be gone (another core that crashed), in ms; one this core knows has no worker left is taken over at once. Default twice --start-timeout-ms.",
  }),
  runnerTokenTtlMs: setting({
    flag: "runner-token-ttl-ms",
    env: "DEVEX_RUNNER_TOKEN_TTL_MS",
    schema: withDefault(durationMsSchema(10_000, 86_400_000), 3_600_000),
    description: "Lifetime of the runner tokens core hands out, in ms. Default 3600000 (1 hour).",
  }),
};

/** Core's validated configuration. */
export type CoreConfig = ConfigOf<typeof coreSettings>;
