import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type ReplPort as ProtoReplPort,
  ReplState as ProtoReplState,
  SkipReason as ProtoSkipReason,
  type Snapshot as ProtoSnapshot,
  SnapshotReason as ProtoSnapshotReason,
} from "@devex/gen/devex/core/v1/repl_pb.js";
import { PortProtocol, type Template as ProtoTemplate } from "@devex/gen/devex/core/v1/template_pb.js";
import {
  EntryType,
  type Entry as ProtoEntry,
  type WatchEvent as ProtoWatchEvent,
  WatchEventType,
} from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import type { ExitStatus } from "@devex/gen/devex/runner/v1/runner_pb.js";
import type {
  FileEntry,
  FsEvent,
  ReplPort,
  ReplState,
  SkippedEntry,
  Snapshot,
  SnapshotReason,
  Template,
  TerminalExit,
} from "./types.js";

/** A protobuf timestamp as a Date; the epoch when unset. */
export function toDate(timestamp: Timestamp | undefined): Date {
  return timestamp ? timestampDate(timestamp) : new Date(0);
}

/** A protobuf timestamp as a Date, or undefined when unset. */
export function toOptionalDate(timestamp: Timestamp | undefined): Date | undefined {
  return timestamp ? timestampDate(timestamp) : undefined;
}

const replStates: Record<ReplState, ProtoReplState> = {
  created: ProtoReplState.CREATED,
  starting: ProtoReplState.STARTING,
  running: ProtoReplState.RUNNING,
  stopping: ProtoReplState.STOPPING,
  stopped: ProtoReplState.STOPPED,
  failed: ProtoReplState.FAILED,
  deleting: ProtoReplState.DELETING,
};

/** The SDK name of a repl state. */
export function replStateName(state: ProtoReplState): ReplState {
  const entry = Object.entries(replStates).find(([, value]) => value === state);
  if (!entry) throw new Error(`unknown repl state ${state}`);
  return entry[0] as ReplState;
}

/** The protobuf value of a repl state. */
export function replStateValue(state: ReplState): ProtoReplState {
  return replStates[state] ?? ProtoReplState.UNSPECIFIED;
}

const snapshotReasons: Record<ProtoSnapshotReason, SnapshotReason> = {
  [ProtoSnapshotReason.UNSPECIFIED]: "manual",
  [ProtoSnapshotReason.STOP]: "stop",
  [ProtoSnapshotReason.IDLE_STOP]: "idle-stop",
  [ProtoSnapshotReason.MANUAL]: "manual",
  [ProtoSnapshotReason.TEMPLATE_SEED]: "template-seed",
  [ProtoSnapshotReason.RESTORE]: "restore",
  [ProtoSnapshotReason.ADMIN_STOP]: "admin-stop",
  [ProtoSnapshotReason.SYSTEM_STOP]: "system-stop",
};

const skipReasons: Partial<Record<ProtoSkipReason, SkippedEntry["reason"]>> = {
  [ProtoSkipReason.FIFO]: "fifo",
  [ProtoSkipReason.SOCKET]: "socket",
  [ProtoSkipReason.DEVICE]: "device",
  [ProtoSkipReason.UNREADABLE]: "unreadable",
};

/** A snapshot as the SDK shows it. */
export function toSnapshot(snapshot: ProtoSnapshot): Snapshot {
  return {
    id: snapshot.id,
    replId: snapshot.replId,
    createdAt: toDate(snapshot.createdAt),
    reason: snapshotReasons[snapshot.reason],
    fileCount: snapshot.fileCount,
    sizeBytes: Number(snapshot.sizeBytes),
    contentSizeBytes: Number(snapshot.contentSizeBytes),
    sha256: snapshot.sha256,
    runnerVersion: snapshot.runnerVersion,
    current: snapshot.current,
    description: snapshot.description,
    restoredFromSnapshotId: snapshot.restoredFromSnapshotId,
    skippedEntryCount: snapshot.skippedEntryCount,
    skippedEntries: snapshot.skippedEntries.map(({ path, reason }) => ({
      path,
      reason: skipReasons[reason] ?? "unknown",
    })),
  };
}

/** A repl's port as the SDK shows it. */
export function toReplPort(port: ProtoReplPort): ReplPort {
  return {
    number: port.number,
    name: port.name,
    protocol: port.protocol === PortProtocol.TCP ? "tcp" : "http",
    public: port.public,
  };
}

/** A template as the SDK shows it. */
export function toTemplate(template: ProtoTemplate): Template {
  return {
    name: template.name,
    displayName: template.displayName,
    description: template.description,
    runnerImage: template.runnerImage,
    startCommand: template.startCommand,
    ports: template.ports.map((port) => ({
      number: port.number,
      name: port.name,
      protocol: port.protocol === PortProtocol.TCP ? "tcp" : "http",
    })),
    language: template.language,
    tags: [...template.tags],
    updatedAt: toDate(template.updatedAt),
    sizeBytes: Number(template.sizeBytes),
  };
}

const entryTypes: Record<EntryType, FileEntry["type"]> = {
  [EntryType.UNSPECIFIED]: "other",
  [EntryType.FILE]: "file",
  [EntryType.DIRECTORY]: "directory",
  [EntryType.SYMLINK]: "symlink",
  [EntryType.OTHER]: "other",
};

/** A workspace entry as the SDK shows it. */
export function toFileEntry(entry: ProtoEntry | undefined): FileEntry {
  if (!entry) throw new Error("the runner sent no entry");
  return {
    name: entry.name,
    path: entry.path,
    type: entryTypes[entry.type],
    sizeBytes: Number(entry.sizeBytes),
    mode: entry.mode,
    modifiedAt: toDate(entry.modifiedAt),
    symlinkTarget: entry.symlinkTarget,
    version: entry.version,
  };
}

const watchEventTypes: Record<WatchEventType, FsEvent["type"]> = {
  [WatchEventType.UNSPECIFIED]: "write",
  [WatchEventType.CREATE]: "create",
  [WatchEventType.WRITE]: "write",
  [WatchEventType.REMOVE]: "remove",
  [WatchEventType.RENAME]: "rename",
};

/** A watch event as the SDK shows it. */
export function toFsEvent(event: ProtoWatchEvent): FsEvent {
  return {
    type: watchEventTypes[event.type],
    path: event.path,
    ...(event.oldPath ? { oldPath: event.oldPath } : {}),
    isDirectory: event.entry?.type === EntryType.DIRECTORY,
  };
}

/** An exit status as the SDK shows it. */
export function toExit(status: ExitStatus | undefined): TerminalExit {
  return {
    exitCode: status?.exitCode ?? null,
    ...(status?.signal ? { signal: status.signal } : {}),
  };
}
