/**
 * Preview credentials, signed with core's runner-token key but never interchangeable with a
 * runner token: their audience is `devex-preview` (a runner token's is a repl id, which never
 * takes that form) and their JWT type is their own, checked both ways. Two kinds: the link
 * token in a preview URL (a minute, exchanged once for a cookie) and the cookie itself (hours,
 * kept by the browser for one preview host). Both bind one repl, one port and one user.
 */

import { runnerTokenAlgorithm, runnerTokenIssuer } from "@devex/kit";
import { type CryptoKey, errors, jwtVerify, SignJWT } from "jose";

/** The audience of every preview credential. */
export const previewAudience = "devex-preview";

/** The two kinds, as JWT types: a URL's token, and the cookie it is exchanged for. */
const typeOf = { link: "devex-preview-link+jwt", cookie: "devex-preview-cookie+jwt" } as const;

/** What a preview credential is: its kind. */
export type PreviewCredentialKind = keyof typeof typeOf;

/** What a preview credential grants. */
export interface PreviewGrant {
  replId: string;
  port: number;
  userId: string;
}

/** Why a credential was refused: 401 (none that verifies) or 403 (valid, but for another repl, port or user). */
export class PreviewCredentialError extends Error {
  constructor(
    message: string,
    readonly status: 401 | 403,
  ) {
    super(message);
    this.name = "PreviewCredentialError";
  }
}

/** Signs a preview credential of `kind`, valid for `ttlMs`. */
export async function signPreviewCredential(
  privateKey: CryptoKey,
  kind: PreviewCredentialKind,
  grant: PreviewGrant,
  ttlMs: number,
): Promise<{ token: string; expiresAtMs: number }> {
  // JWT times are whole seconds: the reported expiry is the token's own.
  const expiresAtSec = Math.floor((Date.now() + ttlMs) / 1000);
  const token = await new SignJWT({ repl: grant.replId, port: grant.port })
    .setProtectedHeader({ alg: runnerTokenAlgorithm, typ: typeOf[kind] })
    .setIssuer(runnerTokenIssuer)
    .setAudience(previewAudience)
    .setSubject(grant.userId)
    .setIssuedAt()
    .setExpirationTime(expiresAtSec)
    .sign(privateKey);
  return { token, expiresAtMs: expiresAtSec * 1000 };
}

/**
 * Verifies a preview credential of `kind` for the repl and port being opened; returns its user.
 * A token that does not verify (garbled, expired, another kind, a runner token) is a 401; one
 * that verifies but names another repl or port is a 403.
 */
export async function verifyPreviewCredential(
  publicKey: CryptoKey,
  kind: PreviewCredentialKind,
  token: string,
  expected: { replId: string; port: number },
): Promise<PreviewGrant & { expiresAtMs: number }> {
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, publicKey, {
      algorithms: [runnerTokenAlgorithm],
      issuer: runnerTokenIssuer,
      audience: previewAudience,
      typ: typeOf[kind],
      requiredClaims: ["exp", "sub", "repl", "port"],
      clockTolerance: 5,
    }));
  } catch (error) {
    const reason = error instanceof errors.JWTExpired ? "it has expired" : "it is not a valid preview token";
    throw new PreviewCredentialError(reason, 401);
  }
  if (payload.repl !== expected.replId || payload.port !== expected.port) {
    throw new PreviewCredentialError("it was issued for another repl or port", 403);
  }
  return {
    replId: expected.replId,
    port: expected.port,
    userId: String(payload.sub),
    expiresAtMs: Number(payload.exp) * 1000,
  };
}
