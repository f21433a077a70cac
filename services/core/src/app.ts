import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Interceptor } from "@connectrpc/connect";
import { AdminService } from "@devex/gen/devex/core/v1/admin_pb.js";
import { AuthService } from "@devex/gen/devex/core/v1/auth_pb.js";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TemplateService } from "@devex/gen/devex/core/v1/template_pb.js";
import { type Server, startServer } from "@devex/kit";
import type { Logger } from "pino";
import { createAuthInterceptor } from "./auth/interceptor.js";
import type { CoreConfig } from "./config.js";
import { deferredService } from "./deferred.js";
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
import { createEmbeddedStore, createRedisStore, type StateStore } from "./state/index.js";
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
  const store: StateStore =
    config.stateStore === "redis"
      ? await createRedisStore({ url: config.redisUrl, keyPrefix: config.redisKeyPrefix, logger })
      : await createEmbeddedStore({ dataDir });
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
  const lifecycle = createReplLifecycle({
    orchestrator,
    repository,
    startTimeoutMs: config.startTimeoutMs,
    stopGraceMs,
    logger,
    async saveWorkspace(repl, reason) {
      const endpoint = repl.runnerEndpoint ?? (await orchestrator.get(repl.id))?.endpoint;
      // No runner: nothing can have changed since the current snapshot.
      if (!endpoint) return undefined;
      const saved = await snapshots.save(
        repl.id,
        { replId: repl.id, endpoint },
        {
          reason: snapshotReasonOfStop(reason),
          final: { graceMs: stopGraceMs },
          currentSnapshotId: repl.currentSnapshotId,
        },
      );
      return saved.id;
    },
    async restoreWorkspace(repl, runner, signal) {
      if (repl.currentSnapshotId) await snapshots.restoreInto(repl.id, repl.currentSnapshotId, runner, signal);
    },
    removeData: (replId) => snapshots.deleteAll(replId),
    onRunning: createStartCommandLauncher({ templates: catalog, tokenKeys, logger }),
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
    interceptors: [authenticate],
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
  const proxy = createReplProxy({ logger, resolve: endpoints.resolve });
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
    stuckAfterMs: 2 * config.startTimeoutMs,
    logger,
  });
  await reconciler.runOnce();
  reconciler.start(config.reconcileIntervalMs);
  const idle = createIdleMonitor({
    lifecycle,
    orchestrator,
    status: runners,
    defaultIdleTimeoutMs: config.idleTimeoutMs,
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
        await Promise.all([idle.stop(), reconciler.stop()]);
        await Promise.all([api.close(), replOrigin.close(), previewOrigin?.close()]);
        await proxy.close();
        await endpoints.close();
        await lifecycle.stopAll?.("system");
        await orchestrator.close({ stopRunners: true });
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
