import { randomBytes } from "node:crypto";

const alphabet = "0123456789abcdefghjkmnpqrstvwxyz";

/** The kinds of id core issues, by prefix. */
export type IdPrefix = "usr" | "ses" | "key" | "repl" | "snap" | "login";

/**
 * A new id: the prefix, `_`, then 26 characters of lower-case Crockford base32 (10 for the
 * time in ms, 16 random), so ids sort by creation time and match the contracts' patterns
 * (`^repl_[0-9a-z]{26}$`).
 */
export function newId(prefix: IdPrefix, nowMs = Date.now()): string {
  let time = "";
  let rest = nowMs;
  for (let i = 0; i < 10; i++) {
    time = alphabet[rest % 32] + time;
    rest = Math.floor(rest / 32);
  }
  const random = randomBytes(16);
  let tail = "";
  for (const byte of random) tail += alphabet[byte % 32];
  return `${prefix}_${time}${tail}`;
}

/**
 * The id characters with every digit mirrored in the id alphabet: index members made of it
 * sort newest first in the store's ascending byte order (ids sort by creation time). The
 * function is its own inverse.
 */
export function mirrorId(text: string): string {
  return [...text].map((char) => alphabet[alphabet.length - 1 - alphabet.indexOf(char)] ?? char).join("");
}
