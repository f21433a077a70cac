import { create, type DescMessage, type Message, toBinary } from "@bufbuild/protobuf";
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { createErrorMappingInterceptor } from "./error-mapping.js";

/**
 * The most of an error message a call answers with, in UTF-8 bytes. gRPC sends it in the
 * `grpc-message` header, percent-encoded (up to three times longer): a message echoing a
 * large input would make a header block the peer refuses, and HTTP/2 then ends the whole
 * connection, every other call on it included. Some clients take 8 KiB of metadata at most.
 */
export const maxErrorMessageBytes = 2048;

/** The most of an error's details (binary protobuf, base64 on the wire) a call answers with, in bytes. */
export const maxErrorDetailsBytes = 4096;

/** Ends a message that was cut short. */
export const truncatedMarker = "… (truncated)";

const encoder = new TextEncoder();

/** `text` if it fits in `maxBytes` of UTF-8, else its longest prefix that fits with {@link truncatedMarker} after it. */
export function truncateText(text: string, maxBytes: number): string {
  if (text.length * 3 <= maxBytes || encoder.encode(text).length <= maxBytes) return text;
  const room = Math.max(0, maxBytes - encoder.encode(truncatedMarker).length);
  // encodeInto never writes part of a character: `read` ends on a character boundary.
  const { read } = encoder.encodeInto(text, new Uint8Array(room));
  return `${text.slice(0, read)}${truncatedMarker}`;
}

type Detail = ConnectError["details"][number];

/**
 * The error a call answers with, bounded: its message cut to {@link maxErrorMessageBytes}
 * and its details to {@link maxErrorDetailsBytes} (a detail holding a list, such as
 * `buf.validate.Violations`, keeps its first entries; a detail that does not fit is left
 * out), with a marker saying so. Anything else than an Error passes unchanged; an Error
 * that is no ConnectError is wrapped only when its message is too long, keeping it as the
 * cause (and answering INTERNAL, as it would have anyway).
 */
export function boundError(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const ce = error instanceof ConnectError ? error : undefined;
  const raw = ce ? ce.rawMessage : error.message;
  const { details, dropped } = boundDetails(ce?.details ?? []);
  const withNote = dropped > 0 ? `${raw} (error details truncated)` : raw;
  const message = truncateText(withNote, maxErrorMessageBytes);
  if (message === raw && dropped === 0) return error;
  if (!ce) return new ConnectError(message, undefined, undefined, undefined, error);
  const bounded = new ConnectError(message, ce.code, ce.metadata, undefined, ce.cause ?? ce);
  // Assigned, not passed: the constructor takes outgoing details only, and a call may rethrow incoming ones.
  bounded.details = details;
  return bounded;
}

/**
 * An interceptor that bounds the error every call ends with (see {@link boundError}),
 * including one a response stream fails with after it started.
 */
export function createErrorBoundsInterceptor(): Interceptor {
  return createErrorMappingInterceptor((error) => boundError(error));
}

/** The details that fit in {@link maxErrorDetailsBytes}, in order; `dropped` counts those shortened or left out. */
function boundDetails(details: Detail[]): { details: Detail[]; dropped: number } {
  let room = maxErrorDetailsBytes;
  let dropped = 0;
  const kept: Detail[] = [];
  for (const detail of details) {
    if (!("desc" in detail)) {
      // An incoming detail (a call's error passed on) is bytes already: kept whole or left out.
      if (detail.value.length <= room) {
        kept.push(detail);
        room -= detail.value.length;
      } else dropped++;
      continue;
    }
    const message = create(detail.desc, detail.value);
    const size = toBinary(detail.desc, message).length;
    if (size <= room) {
      kept.push(detail);
      room -= size;
      continue;
    }
    dropped++;
    const shortened = shortenList(detail.desc, message, room);
    if (!shortened) continue;
    kept.push({ desc: detail.desc, value: shortened.value });
    room -= shortened.size;
  }
  return { details: dropped === 0 ? details : kept, dropped };
}

/**
 * `value` with only the first entries of its first list field, as many as fit in `maxBytes`
 * encoded; undefined if it has no list or not even one entry fits.
 */
function shortenList(
  desc: DescMessage,
  value: Message,
  maxBytes: number,
): { value: Message; size: number } | undefined {
  const field = desc.fields.find((f) => f.fieldKind === "list");
  if (!field) return undefined;
  const list = (value as unknown as Record<string, unknown[]>)[field.localName];
  if (!Array.isArray(list) || list.length === 0) return undefined;
  const sized = (count: number) => {
    const copy = { ...value, [field.localName]: list.slice(0, count) } as Message;
    return { value: copy, size: toBinary(desc, copy).length };
  };
  // The largest count that fits: entries differ in size, so search rather than divide.
  let low = 0;
  let high = list.length - 1;
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if (sized(mid).size <= maxBytes) low = mid;
    else high = mid - 1;
  }
  if (low === 0) return undefined;
  return sized(low);
}
