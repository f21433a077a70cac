import { createContextKey } from "@connectrpc/connect";
import type { Scope, UserRecord } from "../model.js";

/** How the caller authenticated. */
export type CallerCredential =
  | { kind: "session"; sessionId: string; scope: Scope }
  | { kind: "api_key"; apiKeyId: string; scope: Scope };

/** The authenticated caller of an RPC, set by the authentication interceptor. */
export interface Caller {
  user: UserRecord;
  credential: CallerCredential;
}

/** The context key the authentication interceptor sets for handlers. */
export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "authenticated caller" });
