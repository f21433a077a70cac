import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { type AdminService, UsageTotalsSchema, UserUsageSchema } from "@devex/gen/devex/core/v1/admin_pb.js";
import type { Logger } from "pino";
import type { CoreConfig } from "../config.js";
import { userToMessage } from "../identity/convert.js";
import { createUserRepository, type UserRepository, userIdOfMember, userKey, usersIndex } from "../identity/users.js";
import type { ReplStateName } from "../model.js";
import type { Orchestrator } from "../orchestrator/orchestrator.js";
import { decodePageToken, encodePageToken, pageSizeOf } from "../paging.js";
import type { Snapshots } from "../snapshots/snapshots.js";
import type { StateStore } from "../state/store.js";
import { replStateFromProto, replStateNames, replStateToProto, requireAdmin, toRepl, toSnapshot } from "./convert.js";
import type { ReplLifecycle } from "./lifecycle.js";
import { allReplsIndex, replUsageKey, type StoredRepl, userReplsIndex } from "./repository.js";
import { runnerStates } from "./state-machine.js";

/** Options for {@link createAdminService}. */
export interface AdminServiceOptions {
  lifecycle: ReplLifecycle;
  store: StateStore;
  /** Where runners run: counted for usage. */
  orchestrator: Pick<Orchestrator, "list">;
  /** Snapshot history: a force stop's snapshot, and snapshot counts and sizes for usage. */
  snapshots: Pick<Snapshots, "get" | "list">;
  config: Pick<CoreConfig, "idleTimeoutMs">;
  /** The users (identity component). Default: over `store`. */
  users?: UserRepository;
  logger?: Logger;
  /** Reads the time; tests move it. Default `Date.now`. */
  now?: () => number;
}

/** Reading the whole user index (usage is ordered oldest user first, the index newest first) stops at this many. */
const maxUsers = 1_000_000;

/**
 * The AdminService implementation: `router.service(AdminService, createAdminService(options))`.
 * The authentication interceptor lets only admin-scoped callers through; every handler checks
 * again.
 */
export function createAdminService(options: AdminServiceOptions): ServiceImpl<typeof AdminService> {
  const { lifecycle, store, orchestrator, snapshots, config, logger } = options;
  const { repository } = lifecycle;
  const now = options.now ?? Date.now;
  const users = options.users ?? createUserRepository(store);

  /** A repl's runner time: ended runs plus the run in progress, up to `atMs`. */
  const runnerTimeMs = (record: StoredRepl, atMs: number) =>
    (record.runnerTimeMs ?? 0) + (record.runningSinceMs === undefined ? 0 : Math.max(0, atMs - record.runningSinceMs));

  return {
    async listAllRepls(req, ctx) {
      requireAdmin(ctx);
      const states = new Set<ReplStateName>(req.states.map(replStateFromProto));
      const filters = { owner: req.ownerUserId, states: [...states].sort(), template: req.templateName };
      const after = decodePageToken(req.pageToken, filters);
      const page = await repository.scan(req.ownerUserId ? userReplsIndex(req.ownerUserId) : allReplsIndex, {
        ...(after === undefined ? {} : { after }),
        limit: pageSizeOf(req.pageSize),
        filter: (record) =>
          (states.size === 0 || states.has(record.state)) &&
          (req.templateName === "" || record.templateName === req.templateName),
      });
      return {
        repls: page.repls.map((repl) => toRepl(repl, config.idleTimeoutMs)),
        nextPageToken: page.done || page.lastMember === undefined ? "" : encodePageToken(page.lastMember, filters),
      };
    },

    async forceStopRepl(req, ctx) {
      const caller = requireAdmin(ctx);
      logger?.info(
        { replId: req.replId, adminUserId: caller.user.id, skipSave: req.skipSave, reason: req.reason },
        "admin force stop",
      );
      const outcome = await lifecycle.stop(req.replId, { reason: "admin", skipSave: req.skipSave, signal: ctx.signal });
      return {
        repl: toRepl(outcome.repl, config.idleTimeoutMs),
        ...(await (async () => {
          if (outcome.snapshotId === undefined) return {};
          const saved = await snapshots.get(req.replId, outcome.snapshotId);
          return saved ? { snapshot: toSnapshot(saved, outcome.snapshotId) } : {};
        })()),
      };
    },

    async getUsage(req, ctx) {
      requireAdmin(ctx);
      const atMs = now();
      const byState = new Map<ReplStateName, number>(replStateNames.map((state) => [state, 0]));
      const perUser = new Map<string, { repls: number; running: number; runnerTimeMs: number }>();
      let replCount = 0;
      let snapshotCount = 0;
      let storageBytes = 0;
      for await (const { record } of repository.all()) {
        replCount++;
        for (const snapshot of await snapshots.list(record.id)) {
          snapshotCount++;
          storageBytes += snapshot.archiveBytes;
        }
        byState.set(record.state, (byState.get(record.state) ?? 0) + 1);
        const user = perUser.get(record.ownerUserId) ?? { repls: 0, running: 0, runnerTimeMs: 0 };
        user.repls++;
        if (runnerStates.has(record.state)) user.running++;
        user.runnerTimeMs += runnerTimeMs(record, atMs);
        perUser.set(record.ownerUserId, user);
      }
      const runners = (await orchestrator.list()).filter((runner) => runner.phase !== "exited");
      const filters = { user: req.userId };
      const after = decodePageToken(req.pageToken, filters);
      const pageSize = pageSizeOf(req.pageSize);
      let userIds: string[];
      if (req.userId) {
        userIds = (await store.get(userKey(req.userId))) ? [req.userId] : [];
      } else {
        const members = await store.range(usersIndex, { limit: maxUsers });
        userIds = members
          .map(userIdOfMember)
          .sort()
          .filter((userId) => after === undefined || userId > after);
      }
      const more = userIds.length > pageSize;
      userIds = userIds.slice(0, pageSize);
      const deletedRunnerTime = await store.getMany(userIds.map(replUsageKey));
      return {
        totals: create(UsageTotalsSchema, {
          userCount: await users.count(),
          replCount,
          replsByState: replStateNames.map((state) => ({
            state: replStateToProto(state),
            count: byState.get(state) ?? 0,
          })),
          runningRunnerCount: runners.length,
          snapshotCount,
          storageBytes: BigInt(storageBytes),
        }),
        users: userIds.map((userId, i) => {
          const usage = perUser.get(userId);
          return create(UserUsageSchema, {
            userId,
            replCount: usage?.repls ?? 0,
            runningReplCount: usage?.running ?? 0,
            runnerTimeMs: BigInt(Math.round((usage?.runnerTimeMs ?? 0) + Number(deletedRunnerTime[i]?.value ?? 0))),
            storageBytes: 0n,
          });
        }),
        nextPageToken: more ? encodePageToken(userIds[userIds.length - 1] ?? "", filters) : "",
        computedAt: timestampFromMs(atMs),
      };
    },

    async listUsers(req, ctx) {
      requireAdmin(ctx);
      const after = decodePageToken(req.pageToken, {});
      const page = await users.list({ limit: pageSizeOf(req.pageSize), ...(after === undefined ? {} : { after }) });
      return {
        users: page.users.map(({ record }) => userToMessage(record)),
        nextPageToken: page.nextAfter === undefined ? "" : encodePageToken(page.nextAfter, {}),
      };
    },
  };
}
