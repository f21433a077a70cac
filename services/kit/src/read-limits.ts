/**
 * Per-method read limits, derived from the request message's validation rules so a new RPC
 * cannot skip them: connect checks a message's length prefix (or a unary body's
 * content-length) against the limit before reading it, so an oversized request is refused
 * with ResourceExhausted, naming the limit, without being buffered, before any interceptor
 * (authentication included) runs.
 */

import { type DescField, type DescMessage, type DescMethod, getOption, hasOption } from "@bufbuild/protobuf";
import { type FieldRules, field as fieldRules } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

/** The floor of every limit: enough for any control call, small enough to cost nothing. */
export const controlReadMaxBytes = 1024 * 1024;
/**
 * The ceiling of every limit: a transfer chunk (4 MiB) or an argv and env at Linux's total (at
 * most 6 MiB), in the JSON form of the Connect protocol too (bytes as base64).
 */
export const transferReadMaxBytes = 16 * 1024 * 1024;
/**
 * Headroom over the binary bound: the Connect protocol's JSON form writes bytes as base64 (4/3)
 * and may escape string characters, and fields without a validation bound (ids, flags) add a
 * few bytes each. Twice the bound, plus 64 KiB, holds any request the rules admit.
 */
const encodingFactor = 2;
const encodingSlackBytes = 64 * 1024;

/** Bytes a scalar field, a tag or a length prefix take at most. */
const scalarBytes = 11;

/**
 * The most bytes a request of `method` may take on the wire (one message of a stream): the sum
 * of what its fields' validation rules allow (bounded strings and bytes, times the bound on
 * repeated fields and maps), with headroom for the JSON encoding, at least
 * {@link controlReadMaxBytes} and at most {@link transferReadMaxBytes}.
 */
export function readMaxBytesFor(method: DescMethod): number {
  const bound = messageBound(method.input, new Set()) * encodingFactor + encodingSlackBytes;
  return Math.min(transferReadMaxBytes, Math.max(controlReadMaxBytes, bound));
}

function messageBound(message: DescMessage, seen: Set<string>): number {
  // A recursive message is bounded by the floor; its fields add nothing more here.
  if (seen.has(message.typeName)) return 0;
  seen.add(message.typeName);
  let total = 0;
  for (const field of message.fields) total += fieldBound(field, seen);
  seen.delete(message.typeName);
  return total;
}

function fieldBound(field: DescField, seen: Set<string>): number {
  const rules = hasOption(field, fieldRules) ? getOption(field, fieldRules) : undefined;
  switch (field.fieldKind) {
    case "scalar":
    case "enum":
      return scalarBytes + valueBound(rules?.type);
    case "message":
      return scalarBytes + messageBound(field.message, seen);
    case "list": {
      const items = rules?.type.case === "repeated" ? Number(rules.type.value.maxItems) || 1 : 1;
      const item =
        field.listKind === "message"
          ? messageBound(field.message, seen)
          : rules?.type.case === "repeated"
            ? valueBound(rules.type.value.items?.type)
            : 0;
      return items * (scalarBytes + item);
    }
    case "map": {
      const pairs = rules?.type.case === "map" ? Number(rules.type.value.maxPairs) || 1 : 1;
      const key = rules?.type.case === "map" ? valueBound(rules.type.value.keys?.type) : 0;
      const value =
        field.mapKind === "message"
          ? messageBound(field.message, seen)
          : rules?.type.case === "map"
            ? valueBound(rules.type.value.values?.type)
            : 0;
      return pairs * (3 * scalarBytes + key + value);
    }
  }
}

/** What a string or bytes rule allows (a code point takes up to 4 bytes in UTF-8); 0 when unbounded. */
function valueBound(type: FieldRules["type"] | undefined): number {
  if (type?.case === "bytes") return Number(type.value.maxLen);
  if (type?.case === "string") {
    const { maxBytes, maxLen } = type.value;
    return maxBytes > 0n ? Number(maxBytes) : 4 * Number(maxLen);
  }
  return 0;
}
