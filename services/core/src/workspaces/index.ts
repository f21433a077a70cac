/** The workspace store: object storage for snapshots and templates, its interface and its two drivers. */

export { createFilesystemWorkspaceStore, type FilesystemWorkspaceStoreOptions } from "./filesystem.js";
export { createS3WorkspaceStore, MIN_PART_SIZE_BYTES, type S3WorkspaceStoreOptions } from "./s3.js";
export {
  compareWorkspaceKeys,
  type GetOptions,
  InvalidWorkspaceKeyError,
  type ListedObject,
  type ListOptions,
  type ListResult,
  MAX_LIST_LIMIT,
  MAX_WORKSPACE_KEY_BYTES,
  type ObjectInfo,
  type PutOptions,
  type PutResult,
  validateWorkspaceKey,
  validateWorkspacePrefix,
  type WorkspaceBody,
  WorkspaceObjectNotFoundError,
  type WorkspaceStore,
  WorkspaceStoreUnavailableError,
} from "./store.js";
