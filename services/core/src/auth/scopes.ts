import type { DescMethod } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import type { Scope, UserRecord } from "../model.js";

/** The service whose every method needs the admin scope. */
export const adminServiceTypeName = "devex.core.v1.AdminService";

const rank: Record<Scope, number> = { read_only: 1, full: 2, admin: 3 };

/** Whether a credential of scope `held` may make a call that needs `required` (READ_ONLY < FULL < ADMIN). */
export function scopeAllows(held: Scope, required: Scope): boolean {
  return rank[held] >= rank[required];
}

/**
 * The scope a method needs, derived from its descriptor so a new RPC cannot skip the check:
 * AdminService methods need admin, methods declared `idempotency_level = NO_SIDE_EFFECTS`
 * need read-only, every other method needs full.
 */
export function requiredScope(method: DescMethod): Scope {
  if (method.parent.typeName === adminServiceTypeName) return "admin";
  if (method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) return "read_only";
  return "full";
}

/**
 * What a credential of `scope` allows its user right now: never more than the user may hold,
 * so an admin credential acts as full once its user is no longer an admin.
 */
export function effectiveScope(scope: Scope, user: UserRecord): Scope {
  const ceiling: Scope = user.admin ? "admin" : "full";
  return scopeAllows(ceiling, scope) ? scope : ceiling;
}
