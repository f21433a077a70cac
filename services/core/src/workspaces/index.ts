/** The workspace store: object storage for snapshots and templates, its interface and its two drivers. */

export { createFilesystemWorkspaceStore, type FilesystemWorkspaceStoreOptions } from "./filesystem.js";
export { createS3WorkspaceStore, MIN_PART_SIZE_BYTES, type S3WorkspaceStoreOptions } from "./s3.js";
export * from "./store.js";
