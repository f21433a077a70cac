import { Code, ConnectError } from "@connectrpc/connect";
import { type CryptoKey, errors, type JWTPayload, jwtVerify, SignJWT } from "jose";

/** The issuer of every runner token. */
export const runnerTokenIssuer = "devex-core";

/** The signature algorithm of runner tokens (Ed25519). */
export const runnerTokenAlgorithm = "EdDSA";

/** What a runner token grants: one repl, for one user, until it expires. */
export interface RunnerTokenClaims {
  /** The repl the token is for (the JWT audience). */
  replId: string;
  /** The user the token was issued to (the JWT subject). */
  userId: string;
  /** `user` for people and programs, `core` for core's own calls (RunnerService). */
  role: "user" | "core";
}

/** The claims of a token that verified, and when it expires. */
export interface VerifiedRunnerToken extends RunnerTokenClaims {
  /** The token's expiry (its `exp`), in ms since the epoch. */
  expiresAtMs: number;
}

/** Options for {@link signRunnerToken}. */
export interface SignRunnerTokenOptions extends RunnerTokenClaims {
  /** How long the token is valid, in milliseconds. */
  ttlMs: number;
}

/** Signs a runner token with core's private key. */
export async function signRunnerToken(privateKey: CryptoKey, options: SignRunnerTokenOptions): Promise<string> {
  return new SignJWT({ role: options.role })
    .setProtectedHeader({ alg: runnerTokenAlgorithm, typ: "JWT" })
    .setIssuer(runnerTokenIssuer)
    .setAudience(options.replId)
    .setSubject(options.userId)
    .setIssuedAt()
    .setExpirationTime(new Date(Date.now() + options.ttlMs))
    .sign(privateKey);
}

/**
 * Verifies a runner token for one repl: the signature against core's public key, the
 * issuer, the audience (this repl's id) and the expiry. Throws Unauthenticated with the
 * reason otherwise.
 */
export async function verifyRunnerToken(
  publicKey: CryptoKey,
  replId: string,
  token: string,
  clockToleranceSec = 5,
): Promise<VerifiedRunnerToken> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, publicKey, {
      algorithms: [runnerTokenAlgorithm],
      issuer: runnerTokenIssuer,
      audience: replId,
      requiredClaims: ["exp", "sub"],
      clockTolerance: clockToleranceSec,
    }));
  } catch (error) {
    throw new ConnectError(
      `invalid runner token: ${describeJoseError(error)}`,
      Code.Unauthenticated,
      undefined,
      [],
      error,
    );
  }
  // Only the two roles core issues: a token naming another (or none) is not one of ours to honour.
  const { role } = payload;
  if (role !== "core" && role !== "user") {
    throw new ConnectError(
      `invalid runner token: role ${JSON.stringify(role ?? null)} is neither "user" nor "core"`,
      Code.Unauthenticated,
    );
  }
  return { replId, userId: String(payload.sub), role, expiresAtMs: Number(payload.exp) * 1000 };
}

function describeJoseError(error: unknown): string {
  if (error instanceof errors.JWTExpired) return "expired";
  if (error instanceof errors.JWTClaimValidationFailed) {
    return error.claim === "aud" ? "issued for another repl" : `claim ${error.claim} ${error.reason}`;
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) return "signature does not verify";
  if (error instanceof errors.JOSEAlgNotAllowed) return "algorithm not allowed";
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) return "malformed";
  return "could not be verified";
}

/** Reads the bearer token of an `Authorization` header, or undefined. */
export function bearerToken(authorization: string | null): string | undefined {
  const match = authorization?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1];
}

/**
 * Verifies runner tokens like {@link verifyRunnerToken}, remembering the ones that passed
 * until they expire, so a stream of small calls (a browser's keystrokes) pays for the
 * signature check once per token rather than once per call.
 */
export function createRunnerTokenVerifier(
  publicKey: CryptoKey,
  replId: string,
  maxEntries = 1024,
): (token: string) => Promise<RunnerTokenClaims> {
  const verified = new Map<string, VerifiedRunnerToken>();
  return async (token) => {
    const hit = verified.get(token);
    if (hit && hit.expiresAtMs > Date.now()) return hit;
    verified.delete(token);
    const claims = await verifyRunnerToken(publicKey, replId, token);
    if (verified.size >= maxEntries) {
      const oldest = verified.keys().next().value;
      if (oldest !== undefined) verified.delete(oldest);
    }
    verified.set(token, claims);
    return claims;
  };
}
