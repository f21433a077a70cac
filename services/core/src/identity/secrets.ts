import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** A new random secret: `bytes` random bytes in base64url (32 bytes give 43 characters). */
export function randomSecret(bytes = 32): string {
  return randomBytes(bytes).toString("base64url");
}

/** SHA-256 of a UTF-8 string, in lower-case hex. */
export function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/**
 * Whether two hashes are equal, in time that does not depend on where they differ, so a
 * caller cannot learn a stored hash byte by byte from response times.
 */
export function hashesEqual(a: string, b: string): boolean {
  const left = Buffer.from(a, "utf8");
  const right = Buffer.from(b, "utf8");
  return left.length === right.length && timingSafeEqual(left, right);
}
