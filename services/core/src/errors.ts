import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createErrorMappingInterceptor } from "@devex/kit";
import { WorkspaceStoreUnavailableError } from "./workspaces/store.js";

/**
 * Failures of what core depends on, each with the code and phrase a caller gets for it, so that
 * no handler maps them one by one and none reaches a caller as `internal`. A dependency that is
 * down is Unavailable: the call may succeed when tried again later.
 */
const dependencyFailures: readonly { type: abstract new (...args: never[]) => Error; code: Code; phrase: string }[] = [
  { type: WorkspaceStoreUnavailableError, code: Code.Unavailable, phrase: "the workspace store is unavailable" },
];

/**
 * The Connect error of a dependency's failure, naming the dependency and keeping the original
 * as the cause; undefined for anything else (a ConnectError, a bug).
 */
export function dependencyError(error: unknown): ConnectError | undefined {
  const known = dependencyFailures.find(({ type }) => error instanceof type);
  if (!known) return undefined;
  const detail = error instanceof Error ? error.message : String(error);
  return new ConnectError(`${known.phrase} (${detail}); try again later`, known.code, undefined, undefined, error);
}

/**
 * Maps what a handler throws through {@link dependencyError}, also while a response streams.
 * Core's API server installs it, so no RPC answers `internal` for a store that is down.
 */
export function createDependencyErrorInterceptor(): Interceptor {
  return createErrorMappingInterceptor((error) => dependencyError(error) ?? error);
}
