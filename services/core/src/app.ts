import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Interceptor } from "@connectrpc/connect";
import { AdminService } from "@devex/gen/devex/core/v1/admin_pb.js";
import { AuthService } from "@devex/gen/devex/core/v1/auth_pb.js";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TemplateService } from "@devex/gen/devex/core/v1/template_pb.js";
import { type Server, ServingStatus, startServer } from "@devex/kit";
import type { Logger } from "pino";
import { createAuthInterceptor } from "./auth/interceptor.js";
import type { CoreConfig } from "./config.js";
import { deferredService } from "./deferred.js";
import { createDependencyErrorInterceptor } from "./errors.js";
import { createAuthService } from "./identity/auth-service.js";
import { createLoginRoutes } from "./identity/callback.js";
import { createIdentity, type Identity } from "./identity/identity.js";
import { loginProvidersFromConfig, parseAdminIdentities } from "./identity/providers/from-config.js";
import { createOrchestrator, resourcesFor } from "./orchestrator/from-config.js";
import { defaultRunnerResources } from "./orchestrator/orchestrator.js";
import { createRunnerCaller } from "./orchestrator/runner-client.js";
import { loadTokenKeys } from "./orchestrator/token-keys.js";
import { previewAddress } from "./previews/hosts.js";
import { type PreviewOrigin, startPreviewOrigin } from "./previews/preview-origin.js";
import { createReplicas } from "./replicas.js";
import { createAdminService } from "./repls/admin-service.js";
import { snapshotReasonOfStop } from "./repls/convert.js";
import { createIdleMonitor } from "./repls/idle.js";
import { createReplLifecycle } from "./repls/lifecycle.js";
import { createReconciler } from "./repls/reconciler.js";
import { createReplService } from "./repls/repl-service.js";
import { createReplRepository } from "./repls/repository.js";
import { createStartCommandLauncher } from "./repls/start-command.js";
import { createRunnerEndpoints } from "./routing/endpoints.js";
import { createReplProxy, startReplOrigin } from "./routing/proxy.js";
import { createSnapshots } from "./snapshots/snapshots.js";
import { createEmbeddedStore, createRedisStore, createStateMonitor } from "./state/index.js";
import { createStoreCatalog, syncTemplates } from "./templates/store-catalog.js";
import { createTemplateService } from "./templates/template-service.js";
import { openWorkspaceStore } from "./workspaces/from-config.js";

/** A running core: its API server, its repl origin, and how to stop both. */
export interface Core {
  /** Core's API. */
  api: Server;
  /** The repl origin: `<url>/<repl id>/<runner RPC>`. */
  replOrigin: Server;
  publicUrl: string;
  replPublicUrl: string;
  /** The preview origin of repls' web ports; undefined with `--preview-port 0`. */
  previewOrigin?: PreviewOrigin;
  /** The dev admin's API key, with `--dev-api-key`. */
  devApiKey?: string;
  /** Stops serving, stops every runner (they are local children of this core), closes the store. */
  close(): Promise<void>;
}

/**
 * Starts core: the state store, core's token keys, the template catalog, the orchestrator,
 * identity, the repl services, the reconciler and the idle monitor, on two servers (the API
 * and the repl origin).
 */
export async function startCore(config: CoreConfig, logger: Logger): Promise<Core> {
  const dataDir = resolve(config.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const providers = loginProvidersFromConfig(config);
  const tokenKeys = await loadTokenKeys(dataDir);
  const state = createStateMonitor(
    config.stateStore === "redis"
      ? await createRedisStore({
          url: config.redisUrl,
          keyPrefix: config.redisKeyPrefix,
          allowVolatile: config.allowVolatileRedis,
          logger,
        })
      : await createEmbeddedStore({ dataDir }),
    { logger },
  );
  const { store } = state;
  logger.info({ driver: store.driver }, "state store open");
  const objects = await openWorkspaceStore(config, dataDir);
  logger.info({ driver: objects.driver }, "workspace store open");
  if (config.syncTemplates) await syncTemplates(resolve(config.templatesDir), objects, logger);
  const catalog = createStoreCatalog(objects, { logger });

  if (config.sandbox === "none") {
    logger.warn(
      "--sandbox none: repls are NOT isolated: their programs run as core's own user, see core's data and keys, and share this machine's network",
    );
  }
  // Before the orchestrator starts anything: a replica that cannot work beside its peers stops here.
  const replicas = createReplicas({
    store,
    leaseMs: config.replicaLeaseMs,
    orchestrator: config.orchestrator,
    dataDir,
    logger,
  });
  await replicas.start();
  const orchestrator = await createOrchestrator(config, dataDir, tokenKeys, logger);
  const runners = createRunnerCaller(tokenKeys);
  const repository = createReplRepository({ store });
  const endpoints = createRunnerEndpoints(repository);
  const snapshots = createSnapshots({
    objects,
    state: store,
    runners,
    retention: config.snapshotRetention,
    logger,
  });
  const stopGraceMs = 10_000;
  const startCommand = createStartCommandLauncher({ templates: catalog, tokenKeys, logger });
  const lifecycle = createReplLifecycle({
    orchestrator,
    repository,
    coreId: replicas.coreId,
    startTimeoutMs: config.startTimeoutMs,
    stopGraceMs,
    logger,
    async saveWorkspace(repl, reason) {
      const endpoint = repl.runnerEndpoint ?? (await orchestrator.get(repl.id))?.endpoint;
      // No runner: nothing can have changed since the current snapshot.
      if (!endpoint) return undefined;
      const runner = { replId: repl.id, endpoint };
      const saved = await snapshots.save(repl.id, runner, {
        reason: snapshotReasonOfStop(reason),
        // The drain ended the template's start command: the repl that stays running gets it back.
        final: { graceMs: stopGraceMs, onResumed: () => startCommand(repl, runner) },
        currentSnapshotId: repl.currentSnapshotId,
      });
      return saved.id;
    },
    async restoreWorkspace(repl, runner, signal) {
      if (repl.currentSnapshotId) await snapshots.restoreInto(repl.id, repl.currentSnapshotId, runner, signal);
    },
    removeData: (replId) => snapshots.deleteAll(replId),
    onRunning: startCommand,
    async describeRunner(repl) {
      const template = await catalog.get(repl.templateName);
      return {
        replId: repl.id,
        userId: repl.ownerUserId,
        templateName: repl.templateName,
        ...(template ? { image: template.runnerImage } : {}),
        resources: resourcesFor(config, template?.resources, defaultRunnerResources),
        ports: template?.ports.map((port) => port.number) ?? [],
      };
    },
  });

  // The servers listen first, so that port-0 URLs are known to what is built below.
  let identity: Identity | undefined;
  let services: {
    auth: ReturnType<typeof createAuthService>;
    repl: ReturnType<typeof createReplService>;
    admin: ReturnType<typeof createAdminService>;
  };
  const ready = () => {
    if (!identity) throw new Error("core is not ready yet");
    return identity;
  };
  const authenticate: Interceptor = (next) => {
    let interceptor: ReturnType<Interceptor> | undefined;
    return (req) => {
      interceptor ??= createAuthInterceptor(ready())(next);
      return interceptor(req);
    };
  };
  const api = await startServer({
    name: "core",
    logger,
    port: config.port,
    host: config.host,
    shutdownGraceMs: config.shutdownGraceMs,
    ...(config.corsOrigins ? { cors: { origins: config.corsOrigins } } : {}),
    interceptors: [createDependencyErrorInterceptor(), authenticate],
    routes(router) {
      router.service(
        AuthService,
        deferredService(AuthService, () => services.auth),
      );
      router.service(
        ReplService,
        deferredService(ReplService, () => services.repl),
      );
      router.service(TemplateService, createTemplateService(catalog));
      router.service(
        AdminService,
        deferredService(AdminService, () => services.admin),
      );
    },
    fallback: (req, res) => createLoginRoutes(ready())(req, res),
  });
  const proxy = createReplProxy({
    logger,
    resolve: endpoints.resolve,
    maxCallsPerClient: config.replCallsPerClient,
    maxCallsPerRepl: config.replCallsPerRepl,
  });
  const replOrigin = await startReplOrigin({
    port: config.replPort,
    host: config.host,
    logger,
    proxy,
    shutdownGraceMs: config.shutdownGraceMs,
    ...(config.corsOrigins ? { cors: { origins: config.corsOrigins } } : {}),
  });
  const previews =
    config.previewPort === 0
      ? undefined
      : previewAddress({
          domain: config.previewDomain,
          port: config.previewPort,
          ...(config.previewPublicUrl ? { publicUrl: config.previewPublicUrl } : {}),
        });
  const previewOrigin = previews
    ? await startPreviewOrigin({
        port: config.previewPort,
        host: config.host,
        address: previews,
        repository,
        running: endpoints.running,
        tokenKeys,
        shutdownGraceMs: config.shutdownGraceMs,
        logger,
      })
    : undefined;
  const publicUrl = config.publicUrl ?? api.url;
  const replPublicUrl = config.replPublicUrl ?? replOrigin.url;

  identity = createIdentity({
    store,
    publicUrl,
    sessionTtlMs: config.sessionTtlMs,
    providers,
    adminIdentities: parseAdminIdentities(config.adminUsers),
    trustProxy: config.trustProxy,
    rateLimit: { maxFailures: config.authFailureLimit, windowMs: config.authFailureWindowMs },
    logger,
  });
  services = {
    auth: createAuthService(identity),
    repl: createReplService({
      lifecycle,
      snapshots,
      templates: catalog,
      tokenKeys,
      replPublicUrl,
      config,
      ...(previews ? { previews } : {}),
      logger,
    }),
    admin: createAdminService({ lifecycle, store, orchestrator, snapshots, config, logger }),
  };

  const reconciler = createReconciler({
    lifecycle,
    orchestrator,
    replicas,
    stuckAfterMs: config.stuckTransitionMs ?? 2 * config.startTimeoutMs,
    logger,
  });
  // Nothing works without the state store: health says so, so that a supervisor restarts (or
  // a load balancer avoids) a core that cannot use it, and says when it can again.
  state.onChange((healthy) => {
    const status = healthy ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
    api.health.setAll(status);
    replOrigin.health.setAll(status);
  });
  state.start();
  await reconciler.runOnce();
  reconciler.start(config.reconcileIntervalMs);
  const idle = createIdleMonitor({
    lifecycle,
    orchestrator,
    status: runners,
    defaultIdleTimeoutMs: config.idleTimeoutMs,
    coreId: replicas.coreId,
    logger,
  });
  idle.start(config.idleCheckIntervalMs);

  const devApiKey = config.devApiKey ? await ensureDevApiKey(identity, dataDir) : undefined;

  let closing: Promise<void> | undefined;
  return {
    api,
    replOrigin,
    publicUrl,
    replPublicUrl,
    ...(previewOrigin ? { previewOrigin } : {}),
    ...(devApiKey ? { devApiKey } : {}),
    close() {
      closing ??= (async () => {
        await Promise.all([idle.stop(), reconciler.stop(), state.stop()]);
        await Promise.all([api.close(), replOrigin.close(), previewOrigin?.close()]);
        await proxy.close();
        await endpoints.close();
        // With other replicas alive, they take this one's repls over (its lease goes now) and
        // their runners keep running; the last core stops and saves every repl.
        const peers = await replicas.peers().catch(() => []);
        await replicas.close();
        if (peers.length > 0) {
          logger.info({ peers: peers.map((peer) => peer.coreId) }, "leaving this core's repls to its peers");
          await orchestrator.close();
        } else {
          await lifecycle.stopAll?.("system");
          await orchestrator.close({ stopRunners: true });
        }
        await runners.close();
        await store.close();
        await objects.close();
      })();
      return closing;
    },
  };
}

/**
 * The dev admin (`dev`, signed in through the dev provider) and an admin API key for it,
 * kept in `<dataDir>/dev-api-key` (mode 0600) so every start prints the same key until it
 * is revoked.
 */
async function ensureDevApiKey(identity: Identity, dataDir: string): Promise<string> {
  const path = join(dataDir, "dev-api-key");
  const saved = await readFile(path, "utf8").then(
    (text) => text.trim(),
    () => "",
  );
  if (saved && (await identity.apiKeys.verify(saved)).ok) return saved;
  const { user } = await identity.users.signIn(
    {
      providerId: "dev",
      providerKind: "dev",
      subject: "dev",
      login: "dev",
      name: "Developer",
      email: "",
      avatarUrl: "",
    },
    { admin: true, nowMs: Date.now() },
  );
  const created = await identity.apiKeys.create({ userId: user.record.id, name: "dev", scope: "admin" });
  await writeFile(path, `${created.secret}\n`, { mode: 0o600 });
  return created.secret;
}
