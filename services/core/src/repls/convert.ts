import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import {
  type Repl,
  type ReplPort,
  ReplPortSchema,
  ReplSchema,
  ReplState,
  ReplStopReason,
  SkipReason,
  type Snapshot,
  SnapshotReason,
  SnapshotSchema,
} from "@devex/gen/devex/core/v1/repl_pb.js";
import { PortProtocol } from "@devex/gen/devex/core/v1/template_pb.js";
import { type Caller, requireCaller } from "../auth/caller.js";
import { effectiveScope, scopeAllows } from "../auth/scopes.js";
import type { ReplStateName, StopReason, Versioned } from "../model.js";
import type { SkippedEntry } from "../orchestrator/runner-client.js";
import type { SnapshotReasonName, SnapshotRecord } from "../snapshots/model.js";
import type { TemplateRecord } from "../templates/catalog.js";
import type { StoredRepl } from "./repository.js";

const stateToProto: Readonly<Record<ReplStateName, ReplState>> = {
  created: ReplState.CREATED,
  starting: ReplState.STARTING,
  running: ReplState.RUNNING,
  stopping: ReplState.STOPPING,
  stopped: ReplState.STOPPED,
  failed: ReplState.FAILED,
  deleting: ReplState.DELETING,
};

/** Every stored state, in enum order. */
export const replStateNames = Object.keys(stateToProto) as ReplStateName[];

/** The API enum of a stored state. */
export function replStateToProto(state: ReplStateName): ReplState {
  return stateToProto[state];
}

/** The stored state of an API enum value (filters; protovalidate already refused UNSPECIFIED). */
export function replStateFromProto(state: ReplState): ReplStateName {
  const name = replStateNames.find((candidate) => stateToProto[candidate] === state);
  if (!name) throw new ConnectError(`unknown repl state ${state}`, Code.InvalidArgument);
  return name;
}

const stopReasonToProto: Readonly<Record<StopReason, ReplStopReason>> = {
  user: ReplStopReason.USER,
  idle: ReplStopReason.IDLE,
  admin: ReplStopReason.ADMIN,
  system: ReplStopReason.SYSTEM,
};

/**
 * The API Repl of a stored one; `defaultIdleTimeoutMs` fills an unset idle timeout (the effective
 * value); `templatePorts` are the ports its template declares.
 */
export function toRepl(
  repl: Versioned<StoredRepl>,
  defaultIdleTimeoutMs: number,
  templatePorts: TemplateRecord["ports"] = [],
): Repl {
  const { record } = repl;
  return create(ReplSchema, {
    id: record.id,
    name: record.name,
    ownerUserId: record.ownerUserId,
    templateName: record.templateName,
    state: stateToProto[record.state],
    version: BigInt(repl.version),
    failureReason: record.state === "failed" ? record.failureReason : "",
    stopReason: record.stopReason ? stopReasonToProto[record.stopReason] : ReplStopReason.UNSPECIFIED,
    createdAt: timestampFromMs(record.createdAtMs),
    updatedAt: timestampFromMs(record.updatedAtMs),
    ...(record.lastStartedAtMs === undefined ? {} : { lastStartedAt: timestampFromMs(record.lastStartedAtMs) }),
    ...(record.lastStoppedAtMs === undefined ? {} : { lastStoppedAt: timestampFromMs(record.lastStoppedAtMs) }),
    ...(record.lastActiveAtMs === undefined ? {} : { lastActiveAt: timestampFromMs(record.lastActiveAtMs) }),
    idleTimeoutMs: record.idleTimeoutMs || defaultIdleTimeoutMs,
    keepAwake: record.keepAwake ?? false,
    currentSnapshotId: record.currentSnapshotId,
    labels: { ...record.labels },
    ports: toReplPorts(templatePorts, record.publicPorts ?? []),
  });
}

/** A repl's ports: its template's, in the template's order, then those made public that the template lacks. */
export function toReplPorts(templatePorts: TemplateRecord["ports"], publicPorts: readonly number[]): ReplPort[] {
  const declared = new Set(templatePorts.map((port) => port.number));
  return [
    ...templatePorts.map((port) => ({ ...port, public: publicPorts.includes(port.number) })),
    ...publicPorts
      .filter((number) => !declared.has(number))
      .map((number) => ({ number, name: "", protocol: "http" as const, public: true })),
  ].map((port) =>
    create(ReplPortSchema, {
      number: port.number,
      name: port.name,
      protocol: port.protocol === "http" ? PortProtocol.HTTP : PortProtocol.TCP,
      public: port.public,
    }),
  );
}

const snapshotReasonToProto: Readonly<Record<SnapshotReasonName, SnapshotReason>> = {
  stop: SnapshotReason.STOP,
  "idle-stop": SnapshotReason.IDLE_STOP,
  "admin-stop": SnapshotReason.ADMIN_STOP,
  "system-stop": SnapshotReason.SYSTEM_STOP,
  manual: SnapshotReason.MANUAL,
  "template-seed": SnapshotReason.TEMPLATE_SEED,
  restore: SnapshotReason.RESTORE,
};

/** A stop's save is recorded with the snapshot reason of the stop's reason. */
type StopSnapshotReason = Exclude<SnapshotReasonName, "template-seed" | "restore">;

const snapshotReasonsOfStop: Readonly<Record<StopReason, StopSnapshotReason>> = {
  user: "stop",
  idle: "idle-stop",
  admin: "admin-stop",
  system: "system-stop",
};

/** The snapshot reason of a stop's save. */
export function snapshotReasonOfStop(reason: StopReason): StopSnapshotReason {
  return snapshotReasonsOfStop[reason];
}

const skipReasonToProto: Readonly<Record<SkippedEntry["reason"], SkipReason>> = {
  fifo: SkipReason.FIFO,
  socket: SkipReason.SOCKET,
  device: SkipReason.DEVICE,
  unreadable: SkipReason.UNREADABLE,
  unknown: SkipReason.UNSPECIFIED,
};

/** The API Snapshot of a stored one; `currentSnapshotId` is the repl's pointer. */
export function toSnapshot(snapshot: SnapshotRecord, currentSnapshotId: string): Snapshot {
  return create(SnapshotSchema, {
    id: snapshot.id,
    replId: snapshot.replId,
    createdAt: timestampFromMs(snapshot.createdAtMs),
    reason: snapshotReasonToProto[snapshot.reason],
    fileCount: snapshot.fileCount + snapshot.directoryCount + snapshot.symlinkCount,
    sizeBytes: BigInt(snapshot.archiveBytes),
    contentSizeBytes: BigInt(snapshot.contentBytes),
    sha256: snapshot.sha256,
    runnerVersion: snapshot.runnerVersion,
    current: snapshot.id === currentSnapshotId,
    description: snapshot.description,
    restoredFromSnapshotId: snapshot.restoredFromSnapshotId,
    skippedEntryCount: snapshot.skippedCount ?? 0,
    skippedEntries: (snapshot.skipped ?? []).map(({ path, reason }) => ({ path, reason: skipReasonToProto[reason] })),
  });
}

/**
 * The caller, if its credential may change things (FULL or ADMIN scope); PermissionDenied for
 * READ_ONLY. The authentication interceptor checks the same; handlers check again so a wiring
 * mistake cannot open a mutating call.
 */
export function requireWriter(ctx: HandlerContext): Caller {
  const caller = requireCaller(ctx.values);
  if (!scopeAllows(effectiveScope(caller.credential.scope, caller.user), "full")) {
    throw new ConnectError("this credential is read-only; use one with scope FULL", Code.PermissionDenied);
  }
  return caller;
}

/** The caller, if an admin with an ADMIN-scoped credential; PermissionDenied otherwise. */
export function requireAdmin(ctx: HandlerContext): Caller {
  const caller = requireCaller(ctx.values);
  if (!scopeAllows(effectiveScope(caller.credential.scope, caller.user), "admin")) {
    throw new ConnectError("AdminService needs an admin user with an ADMIN-scoped credential", Code.PermissionDenied);
  }
  return caller;
}
