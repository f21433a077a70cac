import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import { RunnerService } from "@devex/gen/devex/runner/v1/runner_pb.js";
import { bearerToken, createRunnerTokenVerifier, type RunnerTokenClaims } from "@devex/kit";
import type { CryptoKey } from "jose";

/** The verified claims of the caller's runner token. */
export const kCaller = createContextKey<RunnerTokenClaims | undefined>(undefined, { description: "runner caller" });

/** Services anyone may call: they reveal nothing about the workspace. */
const openServices = new Set([
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

/**
 * Requires a runner token on every RPC but health and reflection: a JWT signed by core
 * for this repl, unexpired. RunnerService (the control surface) takes core's own tokens only.
 */
export function createRunnerAuthInterceptor(publicKey: CryptoKey, replId: string): Interceptor {
  const verify = createRunnerTokenVerifier(publicKey, replId);
  return (next) => async (req) => {
    if (openServices.has(req.service.typeName)) return next(req);
    const token = bearerToken(req.header.get("authorization"));
    if (!token) {
      throw new ConnectError("missing runner token: send Authorization: Bearer <token>", Code.Unauthenticated);
    }
    const caller = await verify(token);
    if (req.service.typeName === RunnerService.typeName && caller.role !== "core") {
      throw new ConnectError(`${RunnerService.typeName} is for core only`, Code.PermissionDenied);
    }
    req.contextValues.set(kCaller, caller);
    return next(req);
  };
}
