import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { AdminService } from "@devex/gen/devex/core/v1/admin_pb.js";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { generateKeyPair } from "jose";
import { callerKey } from "../../src/auth/caller.js";
import { createDependencyErrorInterceptor } from "../../src/errors.js";
import { createUserRepository } from "../../src/identity/users.js";
import type { Scope, StopReason, UserRecord } from "../../src/model.js";
import type {
  Orchestrator,
  RunnerInstance,
  RunnerSpec,
  StopRunnerOptions,
} from "../../src/orchestrator/orchestrator.js";
import type { RunnerCaller } from "../../src/orchestrator/runner-client.js";
import { createAdminService } from "../../src/repls/admin-service.js";
import { snapshotReasonOfStop } from "../../src/repls/convert.js";
import { createReplLifecycle, type ReplLifecycle } from "../../src/repls/lifecycle.js";
import { createReplService } from "../../src/repls/repl-service.js";
import { createReplRepository, type ReplRepository } from "../../src/repls/repository.js";
import { createSnapshots, type Snapshots } from "../../src/snapshots/snapshots.js";
import { createEmbeddedStore } from "../../src/state/embedded.js";
import type { StateStore } from "../../src/state/store.js";
import type { TemplateCatalog, TemplateRecord } from "../../src/templates/catalog.js";
import { createFilesystemWorkspaceStore, type WorkspaceStore } from "../../src/workspaces/index.js";

export { codeOf } from "@devex/kit/testing";

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });

/** One call the fake orchestrator received. */
export interface OrchestratorCall {
  op: "start" | "waitReady" | "stop" | "removeWorkspace";
  replId: string;
}

/**
 * A strict in-memory orchestrator: it keeps real runner and workspace state, records every
 * call, and records as a violation any call in a senseless order (waitReady without a start,
 * a start without a workspace, a workspace removed under a runner).
 */
export class FakeOrchestrator implements Orchestrator {
  readonly driver = "fake";
  readonly runners = new Map<string, RunnerInstance>();
  readonly workspaces = new Set<string>();
  readonly calls: OrchestratorCall[] = [];
  readonly violations: string[] = [];
  /** Delay of waitReady, in ms: a function to vary it per call. */
  readyDelayMs: number | (() => number) = 0;
  /** When set, waitReady fails with this message (after the delay). */
  failReady: string | undefined;
  /** Delay of stop before the runner is gone, in ms: a function to vary it per call. */
  stopDelayMs: number | (() => number) = 0;
  /** When set, stop fails with this message (the runner stays). */
  failStop: string | undefined;
  private serial = 0;

  workspacePath(replId: string): string {
    return `/fake/workspaces/${replId}`;
  }

  async start(spec: RunnerSpec, signal?: AbortSignal): Promise<RunnerInstance> {
    this.calls.push({ op: "start", replId: spec.replId });
    signal?.throwIfAborted();
    // Like the local driver, a start makes the runner's workspace folder (the restore fills it).
    this.workspaces.add(spec.replId);
    const existing = this.runners.get(spec.replId);
    if (existing && existing.phase !== "exited") return existing;
    const instance: RunnerInstance = {
      id: `runner-${this.serial}`,
      replId: spec.replId,
      userId: spec.userId,
      phase: "starting",
      endpoint: `http://127.0.0.1:${20000 + this.serial++}`,
      startedAtMs: Date.now(),
    };
    this.runners.set(spec.replId, instance);
    return instance;
  }

  async waitReady(replId: string, _timeoutMs: number, signal?: AbortSignal): Promise<RunnerInstance> {
    this.calls.push({ op: "waitReady", replId });
    const instance = this.runners.get(replId);
    if (!instance) {
      this.violations.push(`waitReady without a runner: ${replId}`);
      throw new ConnectError("no runner", Code.Unavailable);
    }
    const delay = typeof this.readyDelayMs === "function" ? this.readyDelayMs() : this.readyDelayMs;
    if (delay > 0) await sleep(delay, signal);
    else await Promise.resolve();
    signal?.throwIfAborted();
    if (this.runners.get(replId) !== instance)
      throw new ConnectError("runner went away while starting", Code.Unavailable);
    if (this.failReady !== undefined) {
      instance.phase = "exited";
      instance.detail = this.failReady;
      throw new ConnectError(this.failReady, Code.DeadlineExceeded);
    }
    instance.phase = "ready";
    return instance;
  }

  async get(replId: string): Promise<RunnerInstance | undefined> {
    return this.runners.get(replId);
  }

  async list(): Promise<RunnerInstance[]> {
    return [...this.runners.values()];
  }

  async stop(replId: string, _graceMs: number, options: StopRunnerOptions = {}): Promise<void> {
    this.calls.push({ op: "stop", replId });
    // Like a real driver, a stop tears down the runner there when it was asked, not one started meanwhile.
    const instance = this.runners.get(replId);
    if (options.runnerId !== undefined && instance?.id !== options.runnerId) return;
    const delay = typeof this.stopDelayMs === "function" ? this.stopDelayMs() : this.stopDelayMs;
    if (delay > 0) await sleep(delay);
    else await Promise.resolve();
    if (this.failStop !== undefined) throw new Error(this.failStop);
    if (instance && this.runners.get(replId) === instance) {
      instance.phase = "exited";
      this.runners.delete(replId);
    }
  }

  async removeWorkspace(replId: string): Promise<void> {
    this.calls.push({ op: "removeWorkspace", replId });
    if (this.runners.has(replId)) this.violations.push(`workspace removed under a runner: ${replId}`);
    this.workspaces.delete(replId);
  }

  async close(): Promise<void> {}

  /** A runner that dies on its own (the orchestrator no longer has it). */
  crash(replId: string): void {
    this.runners.delete(replId);
  }

  /** A ready runner nobody asked for (left over from before a core restart). */
  plantRunner(replId: string, userId = "usr_orphan"): void {
    this.runners.set(replId, {
      id: `orphan-${this.serial++}`,
      replId,
      userId,
      phase: "ready",
      endpoint: "http://127.0.0.1:1",
      startedAtMs: Date.now(),
    });
  }

  count(op: OrchestratorCall["op"], replId?: string): number {
    return this.calls.filter((call) => call.op === op && (replId === undefined || call.replId === replId)).length;
  }
}

/**
 * Runner calls for snapshots without a runner: an export is a few bytes naming the repl (with
 * a correct trailer), an import reads the archive to the end and checks its checksum as a
 * runner does.
 */
export const fakeRunners: Pick<RunnerCaller, "exportWorkspace" | "importWorkspace" | "resume" | "shutdown" | "status"> =
  {
    exportWorkspace(target) {
      const body = Buffer.from(`the workspace of ${target.replId} at ${Date.now()}`);
      const startedAtMs = Date.now();
      return {
        chunks: (async function* () {
          yield body;
        })(),
        report: Promise.resolve({
          fileCount: 1,
          directoryCount: 1,
          symlinkCount: 0,
          contentBytes: body.length,
          archiveBytes: body.length,
          sha256: createHash("sha256").update(body).digest("hex"),
          skippedCount: 0,
          skipped: [],
        }),
        startedAtMs: () => startedAtMs,
      };
    },
    async importWorkspace(_target, archive, options) {
      const hash = createHash("sha256");
      let bytes = 0;
      for await (const chunk of archive) {
        hash.update(chunk);
        bytes += chunk.byteLength;
      }
      const sha256 = hash.digest("hex");
      if (sha256 !== options.sha256 || bytes !== options.archiveBytes) {
        throw new ConnectError("the archive does not match its checksum", Code.DataLoss);
      }
      return { fileCount: 1, directoryCount: 1, symlinkCount: 0, contentBytes: bytes, archiveBytes: bytes, sha256 };
    },
    async shutdown() {},
    async resume() {
      return false;
    },
    async status(target) {
      return {
        replId: target.replId,
        attachedClients: 0,
        sessionCount: 0,
        runningProcessCount: 0,
        busySessionCount: 0,
        lastActivityAtMs: 0,
        version: "0.0.0-harness",
      };
    },
  };

/** Snapshots over a real filesystem workspace store, with a switch to make seeding fail. */
export type HarnessSnapshots = Snapshots & { failSeed: boolean };

/**
 * A catalog of two templates whose archives are stored in `objects` (a few bytes each: the
 * harness never unpacks them), and snapshots over the same store and the state store, whose
 * runner calls go to {@link fakeRunners}.
 */
export async function createHarnessTemplates(
  objects: WorkspaceStore,
  store: StateStore,
  now: () => number,
): Promise<{ catalog: TemplateCatalog; snapshots: HarnessSnapshots }> {
  const template = async (name: string): Promise<TemplateRecord> => {
    const body = Buffer.from(`the files of ${name}`);
    const sha256 = createHash("sha256").update(body).digest("hex");
    const key = `templates/${name}/archives/${sha256}.tar.zst`;
    await objects.put(key, body);
    return {
      name,
      displayName: name,
      description: `${name} template`,
      runnerImage: "runner:test",
      startCommand: "bash",
      ports: [],
      language: name,
      tags: [],
      sizeBytes: 0,
      updatedAtMs: 0,
      archive: {
        key,
        sha256,
        bytes: body.length,
        fileCount: 1,
        directoryCount: 1,
        symlinkCount: 0,
        contentBytes: body.length,
      },
    };
  };
  const templates = [await template("node"), await template("python")];
  const real = createSnapshots({ objects, state: store, runners: fakeRunners, retention: 10, now });
  const snapshots: HarnessSnapshots = {
    ...real,
    failSeed: false,
    async seed(replId, seeded) {
      if (snapshots.failSeed) throw new Error("disk full");
      return real.seed(replId, seeded);
    },
  };
  const catalog: TemplateCatalog = {
    async list() {
      return templates;
    },
    async get(name: string) {
      return templates.find((candidate) => candidate.name === name);
    },
  };
  return { catalog, snapshots };
}

/** A controllable save hook that checks it runs while the runner is still there. */
export interface FakeSave {
  calls: { replId: string; reason: StopReason }[];
  /** When set, saves fail with this message. */
  fail: string | undefined;
  delayMs: number;
}

/** A manual clock. */
export interface FakeClock {
  now: () => number;
  advance(ms: number): void;
}

/** Creates a manual clock at a fixed instant. */
export function createClock(startMs = Date.UTC(2030, 0, 1)): FakeClock {
  let current = startMs;
  return {
    now: () => current,
    advance(ms) {
      current += ms;
    },
  };
}

/** Options for {@link createReplHarness}. */
export interface ReplHarnessOptions {
  /** Default: the wall clock. */
  clock?: FakeClock;
  replQuota?: number;
  startTimeoutMs?: number;
}

/** One core replica's repls component and clients of its services. */
export interface ReplReplica {
  repository: ReplRepository;
  lifecycle: ReplLifecycle;
  /** A ReplService client calling as this user (undefined: no credential). */
  repls(user: UserRecord | undefined, scope?: Scope): Client<typeof ReplService>;
  /** An AdminService client calling as this user. */
  admin(user: UserRecord, scope?: Scope): Client<typeof AdminService>;
}

/** Everything a repls test needs, wired like core wires it; its own methods are replica one's. */
export interface ReplHarness extends ReplReplica {
  store: StateStore;
  orchestrator: FakeOrchestrator;
  catalog: TemplateCatalog;
  snapshots: HarnessSnapshots;
  /** The workspace store (a temporary folder) holding template archives and snapshots. */
  objects: WorkspaceStore;
  /** The folder of {@link ReplHarness.objects}. */
  objectsDir: string;
  save: FakeSave;
  now: () => number;
  /** Another core replica over the same store and orchestrator (no in-process shortcuts shared). */
  replica(): ReplReplica;
  /** Store subscriptions open right now (watch streams, waits). */
  activeSubscriptions(): number;
  /** A user signed in with the dev provider, stored by the identity component's repository. */
  addUser(name: string, options?: { admin?: boolean; createdAtMs?: number }): Promise<UserRecord>;
  /** The repl record and the orchestrator agree: a runner exactly when starting, running or stopping. */
  consistency(replId: string): Promise<string | undefined>;
  close(): Promise<void>;
}

/** The idle timeout harness services use as the default, in ms. */
export const harnessIdleTimeoutMs = 300_000;

/** Builds the services over an embedded store and the fake orchestrator. */
export async function createReplHarness(options: ReplHarnessOptions = {}): Promise<ReplHarness> {
  const now = options.clock?.now ?? Date.now;
  const embedded = await createEmbeddedStore();
  let subscriptions = 0;
  const store: StateStore = {
    ...embedded,
    async subscribe(channel, listener) {
      const unsubscribe = await embedded.subscribe(channel, listener);
      subscriptions++;
      let open = true;
      return async () => {
        if (open) subscriptions--;
        open = false;
        await unsubscribe();
      };
    },
  };
  const orchestrator = new FakeOrchestrator();
  const objectsDir = await mkdtemp(join(tmpdir(), "devex-harness-objects-"));
  const objects = await createFilesystemWorkspaceStore({ root: objectsDir });
  const { catalog, snapshots: harnessSnapshots } = await createHarnessTemplates(objects, store, now);
  const save: FakeSave = { calls: [], fail: undefined, delayMs: 0 };
  const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const config = {
    replQuota: options.replQuota ?? 20,
    idleTimeoutMs: harnessIdleTimeoutMs,
    runnerTokenTtlMs: 600_000,
  };

  /** One core replica: its own repository, lifecycle and services over the shared store and orchestrator. */
  const replica = (): ReplReplica => {
    const repository = createReplRepository({ store, now, pollIntervalMs: 25 });
    const lifecycle = createReplLifecycle({
      orchestrator,
      repository,
      startTimeoutMs: options.startTimeoutMs ?? 1_000,
      stopGraceMs: 0,
      now,
      removeData: (replId) => harnessSnapshots.deleteAll(replId),
      async restoreWorkspace(repl, runner, signal) {
        if (repl.currentSnapshotId) await harnessSnapshots.restoreInto(repl.id, repl.currentSnapshotId, runner, signal);
      },
      async saveWorkspace(repl, reason) {
        save.calls.push({ replId: repl.id, reason });
        if (!orchestrator.runners.has(repl.id)) orchestrator.violations.push(`save without a runner: ${repl.id}`);
        if (save.delayMs > 0) await sleep(save.delayMs);
        if (save.fail !== undefined) throw new Error(save.fail);
        const runner = orchestrator.runners.get(repl.id);
        const saved = await harnessSnapshots.save(
          repl.id,
          { replId: repl.id, endpoint: runner?.endpoint ?? "http://127.0.0.1:1" },
          { reason: snapshotReasonOfStop(reason), final: { graceMs: 0 }, currentSnapshotId: repl.currentSnapshotId },
        );
        return saved.id;
      },
    });
    const routes = (router: Parameters<Parameters<typeof createRouterTransport>[0]>[0]) => {
      router.service(
        ReplService,
        createReplService({
          lifecycle,
          snapshots: harnessSnapshots,
          templates: catalog,
          tokenKeys: { privateKey },
          replPublicUrl: "https://repls.devex.test/",
          config,
          now,
        }),
      );
      router.service(
        AdminService,
        createAdminService({ lifecycle, store, orchestrator, snapshots: harnessSnapshots, config, now }),
      );
    };
    const transportFor = (user: UserRecord | undefined, scope: Scope) =>
      createRouterTransport(routes, {
        router: {
          interceptors: [
            createDependencyErrorInterceptor(),
            (next) => (req) => {
              if (user) {
                req.contextValues.set(callerKey, {
                  user,
                  credential: { kind: "session", sessionId: "ses_test", scope },
                });
              }
              return next(req);
            },
          ],
        },
      });
    return {
      repository,
      lifecycle,
      repls: (user, scope = "full") => createClient(ReplService, transportFor(user, scope)),
      admin: (user, scope = "admin") => createClient(AdminService, transportFor(user, scope)),
    };
  };
  const main = replica();

  const { repository } = main;
  return {
    ...main,
    store,
    orchestrator,
    catalog,
    snapshots: harnessSnapshots,
    objects,
    objectsDir,
    save,
    now,
    replica,
    activeSubscriptions: () => subscriptions,
    async addUser(name, userOptions = {}) {
      const { user } = await createUserRepository(store).signIn(
        { providerId: "dev", providerKind: "dev", subject: name, login: name, name, email: "", avatarUrl: "" },
        { admin: userOptions.admin ?? false, nowMs: userOptions.createdAtMs ?? now() },
      );
      return user.record;
    },
    async consistency(replId) {
      const repl = await repository.get(replId);
      const runner = orchestrator.runners.get(replId);
      const state = repl?.record.state ?? "gone";
      if (state === "running" && runner?.phase !== "ready") return `running without a ready runner (${runner?.phase})`;
      if (state === "running" && repl?.record.runnerEndpoint !== runner?.endpoint)
        return "running with a stale endpoint";
      if ((state === "stopped" || state === "failed" || state === "created" || state === "gone") && runner) {
        return `${state} with a runner left`;
      }
      if (orchestrator.violations.length > 0) return orchestrator.violations.join("; ");
      return undefined;
    },
    async close() {
      await store.close();
      await objects.close();
      await rm(objectsDir, { recursive: true, force: true });
    },
  };
}
