import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";

/** An error detail as the server sent it: its fully qualified type name and its encoded bytes. */
export interface ErrorDetail {
  /** e.g. "google.rpc.RetryInfo" */
  type: string;
  /** The binary Protobuf message. */
  value: Uint8Array;
}

/** Options of a {@link DevexError}. */
export interface DevexErrorOptions {
  /** The Connect code name, e.g. "not_found"; each class has its default. */
  code?: string;
  /** The server's error details. */
  details?: ErrorDetail[];
  /** The error this one wraps (usually the ConnectError). */
  cause?: unknown;
}

/** The base class of every error the SDK throws: `code` is the Connect code name, e.g. "not_found". */
export class DevexError extends Error {
  /** The Connect code name, e.g. "not_found", "invalid_argument". */
  readonly code: string;
  /** The server's error details, if any. */
  readonly details: ErrorDetail[];

  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code ?? "unknown";
    this.details = options.details ?? [];
  }
}

/** The thing asked for does not exist (or is not yours). */
export class NotFoundError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "not_found", ...options });
  }
}

/** Something with that name or path already exists. */
export class AlreadyExistsError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "already_exists", ...options });
  }
}

/** The request was refused as malformed; `field` names the offending field when known (e.g. "name"). */
export class InvalidArgumentError extends DevexError {
  /** The request field at fault, as a dotted path, e.g. "name" or "config.argv". */
  readonly field?: string;

  constructor(message: string, options: DevexErrorOptions & { field?: string } = {}) {
    super(message, { code: "invalid_argument", ...options });
    if (options.field !== undefined) this.field = options.field;
  }
}

/** The API key or token is missing, wrong or expired. */
export class AuthenticationError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "unauthenticated", ...options });
  }
}

/** The credential may not do this (e.g. a read-only key), or a path escapes the workspace. */
export class PermissionDeniedError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "permission_denied", ...options });
  }
}

/** The target is not in a state that allows this (e.g. the repl is not running, a version no longer matches). */
export class FailedPreconditionError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "failed_precondition", ...options });
  }
}

/** A concurrent change got in the way (Connect code "aborted"); retrying usually works. */
export class ConflictError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "aborted", ...options });
  }
}

/** A quota or rate limit was reached; `retryAfterMs` says when to try again, when the server said. */
export class RateLimitError extends DevexError {
  /** How long to wait before retrying, in ms, from the server's `retry-after`; unset when not given. */
  readonly retryAfterMs?: number;

  constructor(message: string, options: DevexErrorOptions & { retryAfterMs?: number } = {}) {
    super(message, { code: "resource_exhausted", ...options });
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }
}

/** A deadline passed: `requestTimeoutMs`, `lifecycleTimeoutMs`, or the server's own. */
export class TimeoutError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "deadline_exceeded", ...options });
  }
}

/** The service (or the repl's runner) cannot be reached right now, or a start or save failed. */
export class UnavailableError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "unavailable", ...options });
  }
}

/** Data failed a checksum (e.g. a damaged snapshot or an upload that arrived different). */
export class DataLossError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "data_loss", ...options });
  }
}

/** The call was cancelled: its AbortSignal aborted (the signal's reason is the `cause`). */
export class CancelledError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "canceled", ...options });
  }
}

/** The server failed unexpectedly (codes internal, unknown, unimplemented, out_of_range). */
export class InternalError extends DevexError {
  constructor(message: string, options: DevexErrorOptions = {}) {
    super(message, { code: "internal", ...options });
  }
}

/** The request field a validation error names, from its `buf.validate.Violations` detail or its message. */
function violatedField(error: ConnectError): string | undefined {
  const [violations] = error.findDetails(ViolationsSchema);
  const path = violations?.violations[0]?.field?.elements.map((element) => element.fieldName);
  if (path && path.length > 0) return path.join(".");
  return /^([A-Za-z_][\w.[\]"]*): /.exec(error.rawMessage)?.[1];
}

/** The `retry-after` header (seconds), in ms. */
function retryAfterMs(error: ConnectError): number | undefined {
  const value = error.metadata.get("retry-after");
  const seconds = value === null ? Number.NaN : Number(value);
  return Number.isFinite(seconds) ? seconds * 1000 : undefined;
}

/**
 * The default mapping from a Connect error to its SDK error class. Pass your own `mapError` to the client
 * to override it, calling this one for the codes you do not handle.
 */
export function defaultMapError(error: ConnectError): DevexError {
  const options: DevexErrorOptions = {
    code: codeToString(error.code),
    details: error.details.flatMap((d) => ("type" in d ? [{ type: d.type, value: d.value }] : [])),
    cause: error,
  };
  const message = error.rawMessage;
  switch (error.code) {
    case Code.NotFound:
      return new NotFoundError(message, options);
    case Code.AlreadyExists:
      return new AlreadyExistsError(message, options);
    case Code.InvalidArgument: {
      const field = violatedField(error);
      return new InvalidArgumentError(message, field === undefined ? options : { ...options, field });
    }
    case Code.Unauthenticated:
      return new AuthenticationError(message, options);
    case Code.PermissionDenied:
      return new PermissionDeniedError(message, options);
    case Code.FailedPrecondition:
      return new FailedPreconditionError(message, options);
    case Code.Aborted:
      return new ConflictError(message, options);
    case Code.ResourceExhausted: {
      const after = retryAfterMs(error);
      return new RateLimitError(message, after === undefined ? options : { ...options, retryAfterMs: after });
    }
    case Code.DeadlineExceeded:
      return new TimeoutError(message, options);
    case Code.Unavailable:
      return new UnavailableError(message, options);
    case Code.DataLoss:
      return new DataLossError(message, options);
    case Code.Canceled:
      return new CancelledError(message, options);
    default:
      return new InternalError(message, options);
  }
}

/**
 * The messages of the TypeError `fetch` rejects with when no server answered (connection refused or reset,
 * no such host, offline), by engine. connect-web passes that TypeError on with code unknown.
 */
const fetchNetworkFailures = new Set([
  "Failed to fetch", // Chromium
  "NetworkError when attempting to fetch resource.", // Firefox
  "Load failed", // Safari
  "fetch failed", // Node's fetch
]);

/** A failure of `fetch` to reach the server, as code unavailable; any other error as it is. */
function networkFailureAsUnavailable(error: ConnectError): ConnectError {
  const cause = error.cause;
  if (error.code !== Code.Unknown || !(cause instanceof TypeError) || !fetchNetworkFailures.has(cause.message)) {
    return error;
  }
  return new ConnectError(
    `the server could not be reached (${cause.message})`,
    Code.Unavailable,
    error.metadata,
    [],
    cause,
  );
}

/** Turns anything a call threw into a DevexError, through the client's mapping. */
export function toDevexError(
  error: unknown,
  mapError: (error: ConnectError) => DevexError,
  signal?: AbortSignal,
): DevexError {
  if (error instanceof DevexError) return error;
  if (signal?.aborted) {
    return new CancelledError("the call was cancelled by its AbortSignal", { cause: signal.reason });
  }
  return mapError(networkFailureAsUnavailable(ConnectError.from(error)));
}
