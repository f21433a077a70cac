import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type ReplAccess,
  ReplAccessSchema,
  type ReplService,
  type WatchReplResponse,
  WatchReplResponseSchema,
} from "@devex/gen/devex/core/v1/repl_pb.js";
import { signRunnerToken } from "@devex/kit";
import type { Logger } from "pino";
import type { Caller } from "../auth/caller.js";
import { requireCaller } from "../auth/caller.js";
import type { CoreConfig } from "../config.js";
import { mirrorId, newId } from "../ids.js";
import type { ReplStateName, Versioned } from "../model.js";
import type { TokenKeys } from "../orchestrator/token-keys.js";
import { decodePageToken, encodePageToken, pageOf, pageSizeOf } from "../paging.js";
import { type PreviewAddress, previewBaseUrl, previewTokenParam } from "../previews/hosts.js";
import { signPreviewCredential } from "../previews/tokens.js";
import type { SnapshotRecord } from "../snapshots/model.js";
import type { Snapshots } from "../snapshots/snapshots.js";
import type { TemplateCatalog } from "../templates/catalog.js";
import { replStateFromProto, requireWriter, toRepl, toSnapshot } from "./convert.js";
import type { ReplLifecycle } from "./lifecycle.js";
import { type ReplEvent, replNotFound, type StoredRepl, userReplsIndex, versionMismatch } from "./repository.js";

/** Options for {@link createReplService}. */
export interface ReplServiceOptions {
  lifecycle: ReplLifecycle;
  /** Snapshots: seeding new repls from templates, history, manual saves and restores. */
  snapshots: Pick<Snapshots, "seed" | "deleteAll" | "list" | "get" | "save" | "copyForRestore" | "discard">;
  templates: TemplateCatalog;
  /** Core's runner-token signing key. */
  tokenKeys: Pick<TokenKeys, "privateKey">;
  /** The URL people reach the repl origin at; access endpoints are `<replPublicUrl>/<repl id>/`. */
  replPublicUrl: string;
  config: Pick<CoreConfig, "replQuota" | "idleTimeoutMs" | "runnerTokenTtlMs">;
  /** Where previews are served; without it (`--preview-port 0`) GetPreviewUrl is FailedPrecondition. */
  previews?: PreviewAddress;
  logger?: Logger;
  /** Reads the time; tests move it. Default `Date.now`. */
  now?: () => number;
}

/** How long a preview URL's token may wait to be exchanged for the preview host's cookie, in ms. */
export const previewTokenTtlMs = 60_000;

/** Default interval of WatchRepl keepalives, in ms (repl.proto: 0 means 15000). */
export const defaultKeepaliveIntervalMs = 15_000;

const maxLabels = 64;

/**
 * The ReplService implementation: `router.service(ReplService, createReplService(options))`.
 * Request fields are already validated (protovalidate interceptor); handlers authenticate the
 * caller and answer another user's repl as NotFound.
 */
export function createReplService(options: ReplServiceOptions): ServiceImpl<typeof ReplService> {
  const { lifecycle, snapshots, templates, tokenKeys, config, logger } = options;
  const { repository } = lifecycle;
  const now = options.now ?? Date.now;
  const replBaseUrl = options.replPublicUrl.replace(/\/+$/, "");

  const repl = async (value: Versioned<StoredRepl>) =>
    toRepl(value, config.idleTimeoutMs, (await templates.get(value.record.templateName))?.ports);

  /** The caller's repl, or NotFound (also for another user's, so existence does not leak). */
  const owned = async (replId: string, caller: Caller): Promise<Versioned<StoredRepl>> => {
    const found = await repository.get(replId);
    if (!found || found.record.ownerUserId !== caller.user.id) throw replNotFound(replId);
    return found;
  };

  const access = async (replId: string, caller: Caller): Promise<ReplAccess> => {
    const ttlMs = config.runnerTokenTtlMs;
    // signRunnerToken reads the wall clock, so the expiry shown does too.
    const expiresAtMs = Date.now() + ttlMs;
    const token = await signRunnerToken(tokenKeys.privateKey, { replId, userId: caller.user.id, role: "user", ttlMs });
    return create(ReplAccessSchema, {
      replId,
      endpointUrl: `${replBaseUrl}/${replId}/`,
      token,
      expiresAt: timestampFromMs(expiresAtMs),
    });
  };

  const notAllowedWhileDeleting = (record: StoredRepl) => {
    if (record.state === "deleting") {
      throw new ConnectError(`repl ${record.id} is being deleted`, Code.FailedPrecondition);
    }
  };

  /** The API form of a stop's snapshot, read back from the history. */
  const stopSnapshot = async (replId: string, snapshotId: string | undefined) => {
    if (snapshotId === undefined) return {};
    const saved = await snapshots.get(replId, snapshotId);
    return saved ? { snapshot: toSnapshot(saved, snapshotId) } : {};
  };

  /** Removes what a create stored for a repl that was not created. */
  const discardAll = (replId: string) =>
    snapshots.deleteAll(replId).catch((error: unknown) => {
      logger?.warn({ err: error, replId }, "could not remove the snapshot of a repl not created");
    });

  return {
    async createRepl(req, ctx) {
      const caller = requireWriter(ctx);
      const template = await templates.get(req.templateName);
      if (!template) throw new ConnectError(`template ${req.templateName} not found`, Code.NotFound);
      if (await repository.findByName(caller.user.id, req.name)) {
        throw new ConnectError(`you already have a repl named ${req.name}`, Code.AlreadyExists);
      }
      const atMs = now();
      const record: StoredRepl = {
        id: newId("repl", atMs),
        name: req.name,
        ownerUserId: caller.user.id,
        templateName: template.name,
        state: "created",
        failureReason: "",
        createdAtMs: atMs,
        updatedAtMs: atMs,
        idleTimeoutMs: req.idleTimeoutMs,
        keepAwake: req.keepAwake,
        currentSnapshotId: "",
        labels: { ...req.labels },
      };
      let seeded: SnapshotRecord;
      try {
        seeded = await snapshots.seed(record.id, template);
      } catch (error) {
        await discardAll(record.id);
        if (error instanceof ConnectError) throw error;
        throw new ConnectError(
          `could not seed the workspace from template ${template.name}`,
          Code.Internal,
          undefined,
          undefined,
          error,
        );
      }
      try {
        return {
          repl: await repl(await repository.create({ ...record, currentSnapshotId: seeded.id }, config.replQuota)),
        };
      } catch (error) {
        await discardAll(record.id);
        throw error;
      }
    },

    async getRepl(req, ctx) {
      const caller = requireCaller(ctx.values);
      if (req.repl.case === "replId") return { repl: await repl(await owned(req.repl.value, caller)) };
      if (req.repl.case === "name") {
        const found = await repository.findByName(caller.user.id, req.repl.value);
        if (!found) throw new ConnectError(`you have no repl named ${req.repl.value}`, Code.NotFound);
        return { repl: await repl(found) };
      }
      throw new ConnectError("repl_id or name is required", Code.InvalidArgument);
    },

    async listRepls(req, ctx) {
      const caller = requireCaller(ctx.values);
      const states = new Set<ReplStateName>(req.states.map(replStateFromProto));
      const labels = Object.entries(req.labels).sort(([a], [b]) => (a < b ? -1 : 1));
      const filters = { states: [...states].sort(), labels };
      const after = decodePageToken(req.pageToken, filters);
      const page = await repository.scan(userReplsIndex(caller.user.id), {
        ...(after === undefined ? {} : { after }),
        limit: pageSizeOf(req.pageSize),
        filter: (record) =>
          (states.size === 0 || states.has(record.state)) &&
          labels.every(([key, value]) => record.labels[key] === value),
      });
      return {
        repls: await Promise.all(page.repls.map(repl)),
        nextPageToken: page.done || page.lastMember === undefined ? "" : encodePageToken(page.lastMember, filters),
      };
    },

    async renameRepl(req, ctx) {
      const caller = requireWriter(ctx);
      await owned(req.replId, caller);
      const result = await repository.update(
        req.replId,
        ({ record }) => {
          notAllowedWhileDeleting(record);
          return record.name === req.name ? undefined : { ...record, name: req.name };
        },
        { expectedVersion: Number(req.expectedVersion) },
      );
      return { repl: await repl(result.repl) };
    },

    async updateRepl(req, ctx) {
      const caller = requireWriter(ctx);
      await owned(req.replId, caller);
      const result = await repository.update(
        req.replId,
        ({ record }) => {
          notAllowedWhileDeleting(record);
          const labels = { ...record.labels };
          for (const key of req.removeLabels) delete labels[key];
          Object.assign(labels, req.setLabels);
          if (Object.keys(labels).length > maxLabels) {
            throw new ConnectError(`a repl has at most ${maxLabels} labels`, Code.InvalidArgument);
          }
          const idleTimeoutMs = req.idleTimeoutMs ?? record.idleTimeoutMs;
          const keepAwake = req.keepAwake ?? record.keepAwake ?? false;
          const unchanged =
            idleTimeoutMs === record.idleTimeoutMs &&
            keepAwake === (record.keepAwake ?? false) &&
            Object.keys(labels).length === Object.keys(record.labels).length &&
            Object.entries(labels).every(([key, value]) => record.labels[key] === value);
          return unchanged ? undefined : { ...record, idleTimeoutMs, keepAwake, labels };
        },
        { expectedVersion: Number(req.expectedVersion) },
      );
      return { repl: await repl(result.repl) };
    },

    async deleteRepl(req, ctx) {
      const caller = requireWriter(ctx);
      const found = await repository.get(req.replId);
      if (!found || found.record.ownerUserId !== caller.user.id) {
        if (req.allowMissing) return {};
        throw replNotFound(req.replId);
      }
      const existed = await lifecycle.delete(req.replId, {
        expectedVersion: Number(req.expectedVersion),
        signal: ctx.signal,
      });
      if (!existed && !req.allowMissing) throw replNotFound(req.replId);
      return {};
    },

    async startRepl(req, ctx) {
      const caller = requireWriter(ctx);
      await owned(req.replId, caller);
      const started = await lifecycle.start(req.replId, {
        expectedVersion: Number(req.expectedVersion),
        signal: ctx.signal,
      });
      return { repl: await repl(started), access: await access(req.replId, caller) };
    },

    async stopRepl(req, ctx) {
      const caller = requireWriter(ctx);
      await owned(req.replId, caller);
      const outcome = await lifecycle.stop(req.replId, {
        reason: "user",
        expectedVersion: Number(req.expectedVersion),
        signal: ctx.signal,
      });
      return { repl: await repl(outcome.repl), ...(await stopSnapshot(req.replId, outcome.snapshotId)) };
    },

    async getReplAccess(req, ctx) {
      const caller = requireWriter(ctx);
      const found = await owned(req.replId, caller);
      if (found.record.state !== "running") {
        throw new ConnectError(
          `repl ${req.replId} is ${found.record.state}, not running: start it first`,
          Code.FailedPrecondition,
        );
      }
      return { access: await access(req.replId, caller) };
    },

    async getPreviewUrl(req, ctx) {
      const caller = requireWriter(ctx);
      const found = await owned(req.replId, caller);
      if (!options.previews) {
        throw new ConnectError("previews are not enabled on this server (--preview-port 0)", Code.FailedPrecondition);
      }
      const url = previewBaseUrl(options.previews, req.replId, req.port);
      if ((found.record.publicPorts ?? []).includes(req.port)) return { url, public: true };
      const { token, expiresAtMs } = await signPreviewCredential(
        tokenKeys.privateKey,
        "link",
        { replId: req.replId, port: req.port, userId: caller.user.id },
        previewTokenTtlMs,
      );
      return {
        url: `${url}?${previewTokenParam}=${encodeURIComponent(token)}`,
        expiresAt: timestampFromMs(expiresAtMs),
        public: false,
      };
    },

    async setPortVisibility(req, ctx) {
      const caller = requireWriter(ctx);
      await owned(req.replId, caller);
      const result = await repository.update(
        req.replId,
        ({ record }) => {
          notAllowedWhileDeleting(record);
          const current = record.publicPorts ?? [];
          if (current.includes(req.port) === req.public) return undefined;
          const publicPorts = req.public
            ? [...current, req.port].sort((a, b) => a - b)
            : current.filter((port) => port !== req.port);
          return { ...record, publicPorts };
        },
        { expectedVersion: Number(req.expectedVersion) },
      );
      return { repl: await repl(result.repl) };
    },

    async *watchRepl(req, ctx) {
      const caller = requireCaller(ctx.values);
      const keepaliveMs = req.keepaliveIntervalMs || defaultKeepaliveIntervalMs;
      const events = createEventQueue<ReplEvent>();
      // Subscribe before the first read, so no change between them is missed.
      const subscription = await repository.subscribe(req.replId, events.push);
      let subscribed = true;
      const unsubscribe = async () => {
        if (subscribed) await subscription();
        subscribed = false;
      };
      // A client that goes away may leave this generator suspended at a yield, never resumed: release on abort.
      ctx.signal.addEventListener("abort", () => void unsubscribe(), { once: true });
      try {
        const first = await owned(req.replId, caller);
        yield message({ case: "repl", value: await repl(first) });
        let version = first.version;
        for (;;) {
          const event = await events.next(keepaliveMs, ctx.signal);
          if (event === "aborted") return;
          if (event === "timeout") {
            // A quiet interval: re-read too, in case a message was lost between replicas.
            const current = await repository.get(req.replId);
            if (!current) {
              yield deleted(req.replId, now());
              return;
            }
            if (current.version > version) {
              version = current.version;
              yield message({ case: "repl", value: await repl(current) });
            } else {
              yield message({ case: "keepalive", value: { sentAt: timestampFromMs(now()) } });
            }
          } else if (event.type === "deleted") {
            yield deleted(req.replId, event.deletedAtMs);
            return;
          } else if (event.version > version) {
            version = event.version;
            yield message({ case: "repl", value: await repl({ record: event.record, version: event.version }) });
          }
        }
      } finally {
        await unsubscribe();
      }
    },

    async listSnapshots(req, ctx) {
      const found = await owned(req.replId, requireCaller(ctx.values));
      const listed = await snapshots.list(req.replId);
      const byId = new Map(listed.map((snapshot) => [snapshot.id, snapshot]));
      // Mirrored ids sort newest first in the ascending order pages are cut in.
      const page = pageOf(listed.map((snapshot) => mirrorId(snapshot.id)).sort(), req.pageSize, req.pageToken, {
        replId: req.replId,
      });
      return {
        snapshots: page.items.map((key) =>
          toSnapshot(byId.get(mirrorId(key)) as SnapshotRecord, found.record.currentSnapshotId),
        ),
        nextPageToken: page.nextPageToken,
      };
    },

    async createSnapshot(req, ctx) {
      const caller = requireWriter(ctx);
      const found = await owned(req.replId, caller);
      const expected = Number(req.expectedVersion);
      if (expected && found.version !== expected) throw versionMismatch(req.replId, expected, found.version);
      const { runnerEndpoint } = found.record;
      if (found.record.state !== "running" || !runnerEndpoint) {
        throw new ConnectError(
          `repl ${req.replId} is ${found.record.state}, not running: only a running repl's workspace can be saved`,
          Code.FailedPrecondition,
        );
      }
      const saved = await snapshots.save(
        req.replId,
        { replId: req.replId, endpoint: runnerEndpoint },
        { reason: "manual", description: req.description, currentSnapshotId: found.record.currentSnapshotId },
      );
      // The pointer, written last. A stop that began meanwhile saves after this save and moves it again.
      const result = await repository.update(req.replId, ({ record }) =>
        (record.state === "running" || record.state === "stopping") && record.currentSnapshotId !== saved.id
          ? { ...record, currentSnapshotId: saved.id }
          : undefined,
      );
      return {
        snapshot: toSnapshot(saved, result.repl.record.currentSnapshotId),
        repl: await repl(result.repl),
      };
    },

    async restoreSnapshot(req, ctx) {
      const caller = requireWriter(ctx);
      const found = await owned(req.replId, caller);
      const expected = Number(req.expectedVersion);
      if (expected && found.version !== expected) throw versionMismatch(req.replId, expected, found.version);
      const notRestorable = (state: ReplStateName) =>
        new ConnectError(
          `repl ${req.replId} is ${state}: stop it before restoring a snapshot (a running workspace would overwrite it on its next save)`,
          Code.FailedPrecondition,
        );
      if (!restorable.has(found.record.state)) throw notRestorable(found.record.state);
      const restored = await snapshots.copyForRestore(req.replId, req.snapshotId, found.record.currentSnapshotId);
      try {
        const result = await repository.update(
          req.replId,
          ({ record }) => {
            if (!restorable.has(record.state)) throw notRestorable(record.state);
            return { ...record, currentSnapshotId: restored.id };
          },
          expected ? { expectedVersion: found.version } : {},
        );
        return { repl: await repl(result.repl), snapshot: toSnapshot(restored, restored.id) };
      } catch (error) {
        await snapshots.discard(req.replId, restored.id).catch((cleanup: unknown) => {
          logger?.warn({ err: cleanup, replId: req.replId }, "could not remove a restore that was not committed");
        });
        throw error;
      }
    },
  };
}

/** The states a snapshot may be restored in: no runner writes the workspace. */
const restorable: ReadonlySet<ReplStateName> = new Set(["created", "stopped", "failed"]);

function message(event: MessageInitShape<typeof WatchReplResponseSchema>["event"]): WatchReplResponse {
  return create(WatchReplResponseSchema, { event });
}

function deleted(replId: string, atMs: number): WatchReplResponse {
  return message({ case: "deleted", value: { replId, deletedAt: timestampFromMs(atMs) } });
}

interface EventQueue<T> {
  push: (event: T) => void;
  /** The next event, or "timeout" after `timeoutMs` without one, or "aborted" once `signal` aborts. */
  next(timeoutMs: number, signal: AbortSignal): Promise<T | "timeout" | "aborted">;
}

function createEventQueue<T>(): EventQueue<T> {
  const queued: T[] = [];
  let wake: (() => void) | undefined;
  return {
    push(event) {
      queued.push(event);
      wake?.();
    },
    async next(timeoutMs, signal) {
      const ready = queued.shift();
      if (ready !== undefined) return ready;
      if (signal.aborted) return "aborted";
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        signal.addEventListener("abort", done, { once: true });
        function done() {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          wake = undefined;
          resolve();
        }
        wake = done;
      });
      if (signal.aborted) return "aborted";
      return queued.shift() ?? "timeout";
    },
  };
}
