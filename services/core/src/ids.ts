import { randomBytes } from "node:crypto";

const alphabet = "0123456789abcdefghjkmnpqrstvwxyz";

/** The kinds of id core issues, by prefix. */
export type IdPrefix = "usr" | "ses" | "key" | "repl" | "snap" | "login";

/** The last id's time and random digits (indexes into the alphabet), for monotonic ids. */
let last: { timeMs: number; random: number[] } = { timeMs: -1, random: [] };

/**
 * A new id: the prefix, `_`, then 26 characters of lower-case Crockford base32 (10 for the
 * time in ms, 16 random), so ids sort by creation time and match the contracts' patterns
 * (`^repl_[0-9a-z]{26}$`). Ids made by this process are strictly increasing: within one
 * millisecond (or if the clock steps back) the random part of the previous id is incremented,
 * as monotonic ULIDs do, so the order of ids is the order they were made in.
 */
export function newId(prefix: IdPrefix, nowMs = Date.now()): string {
  if (nowMs > last.timeMs) {
    last = { timeMs: nowMs, random: Array.from(randomBytes(16), (byte) => byte % 32) };
  } else {
    increment(last.random);
  }
  let time = "";
  let rest = last.timeMs;
  for (let i = 0; i < 10; i++) {
    time = alphabet[rest % 32] + time;
    rest = Math.floor(rest / 32);
  }
  return `${prefix}_${time}${last.random.map((digit) => alphabet[digit]).join("")}`;
}

/** Adds one to base-32 digits (most significant first); 80 random bits do not overflow in practice. */
function increment(digits: number[]): void {
  for (let i = digits.length - 1; i >= 0; i--) {
    const digit = (digits[i] ?? 0) + 1;
    digits[i] = digit % 32;
    if (digit < 32) return;
  }
}

/**
 * The id characters with every digit mirrored in the id alphabet: index members made of it
 * sort newest first in the store's ascending byte order (ids sort by creation time). The
 * function is its own inverse.
 */
export function mirrorId(text: string): string {
  return [...text].map((char) => alphabet[alphabet.length - 1 - alphabet.indexOf(char)] ?? char).join("");
}
