import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { bearerToken, createRunnerTokenVerifier, type RunnerTokenClaims } from "@devex/kit";
import { type CryptoKey, decodeJwt } from "jose";

/** The verified claims of the caller's runner token. */
export const kCaller = createContextKey<RunnerTokenClaims | undefined>(undefined, { description: "runner caller" });

/** Services anyone may call: they reveal nothing about the workspace. */
const openServices = new Set([
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

/** Whom a runner's tokens must be issued for; read on every call, so it may change (Assign). */
export interface RunnerIdentity {
  /** The repl served; undefined while a standby waits for its Assign. */
  readonly replId: string | undefined;
  /** A standby's id (`--standby-id`): RunnerService.Assign also takes core tokens issued for it. */
  readonly standbyId: string | undefined;
}

/**
 * Requires a runner token on every RPC but health and reflection: a JWT signed by core
 * for this repl, unexpired, of role `user` or `core`. RunnerService (the control surface)
 * takes core's own tokens only, every other service users' tokens only.
 * A standby has no repl until assigned: until then it takes only Assign, with a token for
 * its standby id (FAILED_PRECONDITION for anything else); Assign keeps taking such tokens,
 * so that core can repeat a call whose answer it lost.
 */
export function createRunnerAuthInterceptor(publicKey: CryptoKey, identity: RunnerIdentity): Interceptor {
  // One verifier (with its cache) per audience: the repl and the standby id, at most two.
  const verifiers = new Map<string, (token: string) => Promise<RunnerTokenClaims>>();
  const verifierFor = (audience: string) => {
    let verify = verifiers.get(audience);
    if (!verify) {
      verify = createRunnerTokenVerifier(publicKey, audience);
      verifiers.set(audience, verify);
    }
    return verify;
  };
  return (next) => async (req) => {
    if (openServices.has(req.service.typeName)) return next(req);
    const token = bearerToken(req.header.get("authorization"));
    if (!token) {
      throw new ConnectError("missing runner token: send Authorization: Bearer <token>", Code.Unauthenticated);
    }
    const { replId, standbyId } = identity;
    const assigning =
      req.service.typeName === RunnerService.typeName && req.method.name === RunnerService.method.assign.name;
    // Assign verifies against the standby id until there is a repl, then against the one the
    // token names (unverified, this only picks which audience the verification requires).
    const audience =
      assigning && standbyId !== undefined && (replId === undefined || audienceOf(token) === standbyId)
        ? standbyId
        : replId;
    if (audience === undefined) {
      throw new ConnectError(
        "this runner is a standby without a repl: it serves only health, reflection and RunnerService.Assign",
        Code.FailedPrecondition,
      );
    }
    const caller = await verifierFor(audience)(token);
    // Each token for its own services: core's for the control surface only, a user's for the rest.
    const control = req.service.typeName === RunnerService.typeName;
    if (control && caller.role !== "core") {
      throw new ConnectError(`${RunnerService.typeName} is for core only`, Code.PermissionDenied);
    }
    if (!control && caller.role !== "user") {
      throw new ConnectError(
        `${req.service.typeName} takes a user's token (GetReplAccess), not core's`,
        Code.PermissionDenied,
      );
    }
    req.contextValues.set(kCaller, caller);
    return next(req);
  };
}

/** The `aud` claim of a token, unverified; undefined if it has none or is no JWT. */
function audienceOf(token: string): string | undefined {
  try {
    const { aud } = decodeJwt(token);
    return typeof aud === "string" ? aud : undefined;
  } catch {
    return undefined;
  }
}
