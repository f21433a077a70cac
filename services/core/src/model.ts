/**
 * The records core stores, as plain JSON-serialisable objects. Times are ms since the
 * epoch; the generated API types are built from these at the service edge.
 */

/** Login provider kinds. */
export type ProviderKind = "github" | "oidc" | "dev";

/** What a credential may do: read-only calls, every call on one's own resources, or admin calls too. */
export type Scope = "read_only" | "full" | "admin";

/** An identity at a login provider, linked to one user. */
export interface IdentityRecord {
  /** The configured provider's id (`github`, `oidc`, `dev`, or an operator-chosen id). */
  providerId: string;
  providerKind: ProviderKind;
  /** The provider's stable id for the person (GitHub's numeric id, the OIDC `sub`). */
  subject: string;
  /** The login name at the provider (shown, never used to match). */
  login: string;
  email: string;
  linkedAtMs: number;
}

/** A user: a stable id, never derived from a name or an email. */
export interface UserRecord {
  id: string;
  displayName: string;
  email: string;
  avatarUrl: string;
  admin: boolean;
  identities: IdentityRecord[];
  createdAtMs: number;
  lastLoginAtMs?: number;
}

/** A browser session; the secret is only in the cookie, the record keeps its hash. */
export interface SessionRecord {
  id: string;
  userId: string;
  providerId: string;
  /** SHA-256 of the session secret, hex. */
  secretHash: string;
  createdAtMs: number;
  lastUsedAtMs: number;
  expiresAtMs: number;
  userAgent: string;
  ipAddress: string;
}

/** An API key; the secret is shown once, the record keeps its hash. */
export interface ApiKeyRecord {
  id: string;
  userId: string;
  name: string;
  /** The first characters of the secret, to recognise a key in a list. */
  prefix: string;
  /** SHA-256 of the secret, hex. */
  secretHash: string;
  scope: Scope;
  createdAtMs: number;
  lastUsedAtMs?: number;
  expiresAtMs?: number;
  revokedAtMs?: number;
}

/** The states of a repl (see repls/state-machine.ts for the transitions). */
export type ReplStateName = "created" | "starting" | "running" | "stopping" | "stopped" | "failed" | "deleting";

/** Why a repl was last stopped. */
export type StopReason = "user" | "idle" | "admin" | "system";

/** A repl. Its version is the store's version of the record. */
export interface ReplRecord {
  id: string;
  name: string;
  ownerUserId: string;
  templateName: string;
  state: ReplStateName;
  failureReason: string;
  stopReason?: StopReason;
  createdAtMs: number;
  updatedAtMs: number;
  /** When the current transition (starting, stopping, deleting) began; the reconciler retries stuck ones. */
  transitionAtMs?: number;
  lastStartedAtMs?: number;
  lastStoppedAtMs?: number;
  lastActiveAtMs?: number;
  /** 0 means the server default. */
  idleTimeoutMs: number;
  /** Never stopped for being idle, whatever its idle timeout (ReplService's keep_awake). */
  keepAwake?: boolean;
  currentSnapshotId: string;
  labels: Record<string, string>;
  /** Where its runner listens (core-internal URL) while starting or running. */
  runnerEndpoint?: string;
  /** Where its runner's preview proxy listens (`unix:/path` or a loopback URL) while running. */
  previewEndpoint?: string;
  /** Ports the owner made public (ReplService.SetPortVisibility), ascending; the rest are private. */
  publicPorts?: number[];
}

/** A record with the version it was read at. */
export interface Versioned<T> {
  record: T;
  version: number;
}
