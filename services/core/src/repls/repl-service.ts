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
import { newId } from "../ids.js";
import type { ReplStateName, Versioned } from "../model.js";
import type { Orchestrator } from "../orchestrator/orchestrator.js";
import type { TokenKeys } from "../orchestrator/token-keys.js";
import { decodePageToken, encodePageToken, pageSizeOf } from "../paging.js";
import type { TemplateCatalog } from "../templates/catalog.js";
import { replStateFromProto, requireWriter, toRepl, toStopSnapshot } from "./convert.js";
import type { ReplLifecycle } from "./lifecycle.js";
import { type ReplEvent, replNotFound, type StoredRepl, userReplsIndex } from "./repository.js";

/** Options for {@link createReplService}. */
export interface ReplServiceOptions {
  lifecycle: ReplLifecycle;
  /** Where workspaces live (`workspacePath`, `removeWorkspace`) for seeding new repls. */
  orchestrator: Pick<Orchestrator, "workspacePath" | "removeWorkspace">;
  templates: TemplateCatalog;
  /** Core's runner-token signing key. */
  tokenKeys: Pick<TokenKeys, "privateKey">;
  /** The URL people reach the repl origin at; access endpoints are `<replPublicUrl>/<repl id>/`. */
  replPublicUrl: string;
  config: Pick<CoreConfig, "replQuota" | "idleTimeoutMs" | "runnerTokenTtlMs">;
  logger?: Logger;
  /** Reads the time; tests move it. Default `Date.now`. */
  now?: () => number;
}

/** Default interval of WatchRepl keepalives, in ms (repl.proto: 0 means 15000). */
export const defaultKeepaliveIntervalMs = 15_000;

const maxLabels = 64;

/**
 * The ReplService implementation: `router.service(ReplService, createReplService(options))`.
 * Request fields are already validated (protovalidate interceptor); handlers authenticate the
 * caller and answer another user's repl as NotFound.
 */
export function createReplService(options: ReplServiceOptions): ServiceImpl<typeof ReplService> {
  const { lifecycle, orchestrator, templates, tokenKeys, config, logger } = options;
  const { repository } = lifecycle;
  const now = options.now ?? Date.now;
  const replBaseUrl = options.replPublicUrl.replace(/\/+$/, "");

  const repl = (value: Versioned<StoredRepl>) => toRepl(value, config.idleTimeoutMs);

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

  const snapshotsLater = () =>
    new ConnectError(
      "snapshots are not available yet: in this mode the workspace lives on the local disk",
      Code.Unimplemented,
    );

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
        currentSnapshotId: "",
        labels: { ...req.labels },
      };
      const removeWorkspace = () =>
        orchestrator.removeWorkspace(record.id).catch((error: unknown) => {
          logger?.warn({ err: error, replId: record.id }, "could not remove the workspace of a repl not created");
        });
      try {
        await templates.seed(template.name, orchestrator.workspacePath(record.id));
      } catch (error) {
        await removeWorkspace();
        throw new ConnectError(
          `could not seed the workspace from template ${template.name}`,
          Code.Internal,
          undefined,
          undefined,
          error,
        );
      }
      try {
        return { repl: repl(await repository.create(record, config.replQuota)) };
      } catch (error) {
        await removeWorkspace();
        throw error;
      }
    },

    async getRepl(req, ctx) {
      const caller = requireCaller(ctx.values);
      if (req.repl.case === "replId") return { repl: repl(await owned(req.repl.value, caller)) };
      if (req.repl.case === "name") {
        const found = await repository.findByName(caller.user.id, req.repl.value);
        if (!found) throw new ConnectError(`you have no repl named ${req.repl.value}`, Code.NotFound);
        return { repl: repl(found) };
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
        repls: page.repls.map(repl),
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
      return { repl: repl(result.repl) };
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
          const unchanged =
            idleTimeoutMs === record.idleTimeoutMs &&
            Object.keys(labels).length === Object.keys(record.labels).length &&
            Object.entries(labels).every(([key, value]) => record.labels[key] === value);
          return unchanged ? undefined : { ...record, idleTimeoutMs, labels };
        },
        { expectedVersion: Number(req.expectedVersion) },
      );
      return { repl: repl(result.repl) };
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
      return { repl: repl(started), access: await access(req.replId, caller) };
    },

    async stopRepl(req, ctx) {
      const caller = requireWriter(ctx);
      await owned(req.replId, caller);
      const outcome = await lifecycle.stop(req.replId, {
        reason: "user",
        expectedVersion: Number(req.expectedVersion),
        signal: ctx.signal,
      });
      return {
        repl: repl(outcome.repl),
        ...(outcome.snapshotId === undefined
          ? {}
          : { snapshot: toStopSnapshot(req.replId, outcome.snapshotId, "user", now()) }),
      };
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
        yield message({ case: "repl", value: repl(first) });
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
              yield message({ case: "repl", value: repl(current) });
            } else {
              yield message({ case: "keepalive", value: { sentAt: timestampFromMs(now()) } });
            }
          } else if (event.type === "deleted") {
            yield deleted(req.replId, event.deletedAtMs);
            return;
          } else if (event.version > version) {
            version = event.version;
            yield message({ case: "repl", value: repl({ record: event.record, version: event.version }) });
          }
        }
      } finally {
        await unsubscribe();
      }
    },

    async listSnapshots(req, ctx) {
      await owned(req.replId, requireCaller(ctx.values));
      throw snapshotsLater();
    },

    async createSnapshot(req, ctx) {
      await owned(req.replId, requireWriter(ctx));
      throw snapshotsLater();
    },

    async restoreSnapshot(req, ctx) {
      await owned(req.replId, requireWriter(ctx));
      throw snapshotsLater();
    },
  };
}

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
