import type { ArchiveTotals } from "@devex/kit";
import type { SkippedEntry } from "../orchestrator/runner-client.js";

/**
 * Snapshots: saved copies of a repl's workspace. Each is one zstd tar archive in the
 * workspace store plus a manifest beside it; the list of a repl's snapshots lives in the
 * state store, and the pointer to the current one is the repl record's `currentSnapshotId`,
 * committed last.
 */

/** Why a snapshot was taken (repl.proto SnapshotReason). */
export type SnapshotReasonName =
  | "stop"
  | "idle-stop"
  | "admin-stop"
  | "system-stop"
  | "manual"
  | "template-seed"
  | "restore";

/**
 * A repl's snapshot, as listed in the state store and written as its manifest: what its
 * archive holds (counts, sizes, the SHA-256 of the stored bytes, checked on every restore),
 * and where and why it was made.
 */
export interface SnapshotRecord extends ArchiveTotals {
  id: string;
  replId: string;
  reason: SnapshotReasonName;
  /** When the export began, in ms since the epoch: of two racing saves, the later-begun one holds the newer tree. */
  startedAtMs: number;
  /** When the save completed (archive and manifest stored), in ms since the epoch. */
  createdAtMs: number;
  /** The runner that wrote the archive; empty for template seeds and restores. */
  runnerVersion: string;
  description: string;
  /** For restores: the snapshot whose tree this one holds. */
  restoredFromSnapshotId: string;
  /** The workspace-store key of the archive. */
  archiveKey: string;
  /**
   * How many entries of the workspace the save left out (FIFOs, sockets, devices, what the
   * runner could not read); unset on snapshots recorded before these were counted.
   */
  skippedCount?: number;
  /** The first of them (at most 10). */
  skipped?: SkippedEntry[];
}

/** The workspace-store prefix of everything a repl stores: deleting the repl deletes it. */
export const replObjectsPrefix = (replId: string): string => `repls/${replId}/`;
/** The prefix of a repl's snapshot archives and manifests. */
export const snapshotObjectsPrefix = (replId: string): string => `repls/${replId}/snapshots/`;
/** The key of a snapshot's archive. */
export const snapshotArchiveKey = (replId: string, snapshotId: string): string =>
  `${snapshotObjectsPrefix(replId)}${snapshotId}.tar.zst`;
/** The key of a snapshot's manifest (the {@link SnapshotRecord} as JSON). */
export const snapshotManifestKey = (replId: string, snapshotId: string): string =>
  `${snapshotObjectsPrefix(replId)}${snapshotId}.json`;
/** The state-store key listing a repl's snapshots, newest first. */
export const snapshotListKey = (replId: string): string => `repl-snapshots:${replId}`;
