import { join } from "node:path";
import type { CoreConfig } from "../config.js";
import { createFilesystemWorkspaceStore } from "./filesystem.js";
import type { WorkspaceStore } from "./store.js";

/** The workspace-store settings of core's configuration. */
export type WorkspaceStoreConfig = Pick<
  CoreConfig,
  | "workspaceStore"
  | "objectsDir"
  | "s3Endpoint"
  | "s3Region"
  | "s3Bucket"
  | "s3AccessKeyId"
  | "s3SecretAccessKey"
  | "s3ForcePathStyle"
  | "s3CreateBucket"
  | "s3RequestTimeoutMs"
>;

/** Opens the workspace store the configuration names; `dataDir` holds the filesystem driver's default folder. */
export async function openWorkspaceStore(config: WorkspaceStoreConfig, dataDir: string): Promise<WorkspaceStore> {
  if (config.workspaceStore === "filesystem") {
    return createFilesystemWorkspaceStore({ root: config.objectsDir ?? join(dataDir, "objects") });
  }
  const missing = [
    config.s3AccessKeyId ? undefined : "--s3-access-key-id (DEVEX_S3_ACCESS_KEY_ID)",
    config.s3SecretAccessKey ? undefined : "--s3-secret-access-key (DEVEX_S3_SECRET_ACCESS_KEY)",
  ].filter((name) => name !== undefined);
  if (missing.length > 0) throw new Error(`--workspace-store=s3 needs ${missing.join(" and ")}`);
  // Loaded only when used: the AWS SDK is most of core's memory otherwise.
  const { createS3WorkspaceStore } = await import("./s3.js");
  return createS3WorkspaceStore({
    ...(config.s3Endpoint ? { endpoint: config.s3Endpoint } : {}),
    region: config.s3Region,
    bucket: config.s3Bucket,
    accessKeyId: config.s3AccessKeyId ?? "",
    secretAccessKey: config.s3SecretAccessKey ?? "",
    forcePathStyle: config.s3ForcePathStyle,
    createBucket: config.s3CreateBucket,
    requestTimeoutMs: config.s3RequestTimeoutMs,
  });
}
