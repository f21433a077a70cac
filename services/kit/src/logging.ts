import { randomUUID } from "node:crypto";
import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import { type Logger, pino } from "pino";

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** The service name put on every line (`core`, `runner`). */
  service: string;
  /** pino level; `silent` turns logging off. Default `info`. */
  level?: string;
}

/** Creates the structured (JSON lines) logger of a service. */
export function createLogger(options: LoggerOptions): Logger {
  return pino({ name: options.service, level: options.level ?? "info", base: { service: options.service } });
}

/** The logger of the current request, carrying its request id. */
export const kRequestLogger = createContextKey<Logger | undefined>(undefined, { description: "request logger" });

/** The id of the current request: the caller's `x-request-id`, or a new one. */
export const kRequestId = createContextKey<string>("", { description: "request id" });

/** The request id header, read from callers and echoed on every response. */
export const requestIdHeader = "x-request-id";

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Gives every call a request id and a child logger, and logs each call once when it
 * ends (method, code, duration): Internal and Unknown failures (our bugs) at error, other
 * failures at info, successes at debug, since some methods are called per keystroke.
 * Streams are logged when their response ends.
 */
export function createLoggingInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const offered = req.header.get(requestIdHeader);
    const requestId = offered && requestIdPattern.test(offered) ? offered : randomUUID();
    const log = logger.child({ requestId, method: `${req.service.typeName}/${req.method.name}` });
    req.contextValues.set(kRequestId, requestId);
    req.contextValues.set(kRequestLogger, log);
    const started = performance.now();
    const finish = (error: unknown) => {
      const durationMs = Math.round((performance.now() - started) * 1000) / 1000;
      if (error === undefined) {
        log.debug({ code: "ok", durationMs }, "call");
        return;
      }
      const ce = ConnectError.from(error);
      // Internal and Unknown are our bugs (bad input is InvalidArgument): they are errors to look at.
      const level = ce.code === Code.Internal || ce.code === Code.Unknown ? "error" : "info";
      log[level]({ code: codeName(ce.code), durationMs, err: ce.cause ?? ce }, "call failed");
    };
    try {
      const res = await next(req);
      res.header.set(requestIdHeader, requestId);
      if (!res.stream) {
        finish(undefined);
        return res;
      }
      return { ...res, message: observeStream(res.message, finish) };
    } catch (error) {
      finish(error);
      if (error instanceof ConnectError) error.metadata.set(requestIdHeader, requestId);
      throw error;
    }
  };
}

/** Calls `done` once when the stream ends, with its error if it failed. */
export async function* observeStream<T>(source: AsyncIterable<T>, done: (error: unknown) => void): AsyncIterable<T> {
  let error: unknown;
  try {
    yield* source;
  } catch (e) {
    error = e;
    throw e;
  } finally {
    done(error);
  }
}

/** The lower-case name of a Connect code, as used on the wire (`invalid_argument`). */
export function codeName(code: number): string {
  return codeNames[code] ?? "unknown";
}

const codeNames = [
  "ok",
  "canceled",
  "unknown",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "internal",
  "unavailable",
  "data_loss",
  "unauthenticated",
];
