import { Code, ConnectError, type ContextValues, createContextKey } from "@connectrpc/connect";
import type { Scope, UserRecord } from "../model.js";

/**
 * How the caller authenticated. `scope` is the effective scope (never above what the user may
 * hold right now); `expiresAtMs` is when the credential stops working (absent: never).
 */
export type CallerCredential =
  | { kind: "session"; sessionId: string; scope: Scope; expiresAtMs?: number }
  | { kind: "api_key"; apiKeyId: string; scope: Scope; expiresAtMs?: number };

/** The authenticated caller of an RPC, set by the authentication interceptor. */
export interface Caller {
  user: UserRecord;
  credential: CallerCredential;
}

/** The context key the authentication interceptor sets for handlers. */
export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "authenticated caller" });

/**
 * The caller of a handler's call. The interceptor refuses unauthenticated calls before any
 * non-public handler runs, so this throws only when it is not installed.
 */
export function requireCaller(values: ContextValues): Caller {
  const caller = values.get(callerKey);
  if (!caller) throw new ConnectError("this call needs a credential", Code.Unauthenticated);
  return caller;
}
