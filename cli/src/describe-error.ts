import {
  AuthenticationError,
  CancelledError,
  DevexError,
  PermissionDeniedError,
  RateLimitError,
  TimeoutError,
  UnavailableError,
} from "@devex/sdk";
import { CliError } from "./cli-error.js";

/** What `describeError` needs to say where things went wrong. */
export interface ErrorContext {
  /** Core's URL, named when it cannot be reached. */
  baseUrl?: string;
}

/** The one line (without the `devex: ` prefix) and exit status for a failure. */
export interface ErrorReport {
  message: string;
  exitCode: number;
  /** False for failures a person caused or can fix; true for bugs, where DEVEX_DEBUG=1 helps. */
  unexpected: boolean;
}

/** Turns any thrown value into the line a person reads. */
export function describeError(error: unknown, context: ErrorContext = {}): ErrorReport {
  if (error instanceof CliError) return { message: error.message, exitCode: error.exitCode, unexpected: false };
  if (error instanceof DevexError)
    return { message: describeDevexError(error, context), exitCode: 1, unexpected: false };
  const message = error instanceof Error ? error.message : String(error);
  return { message, exitCode: 1, unexpected: true };
}

function describeDevexError(error: DevexError, context: ErrorContext): string {
  // Connect prefixes messages with the code ("[not_found] ..."); the class already says it.
  const message = error.message.replace(/^\[[a-z_]+\]\s*/, "");
  if (error instanceof AuthenticationError) return `the API key was refused (${message}); run \`devex login\``;
  if (error instanceof PermissionDeniedError) return `permission denied: ${message}`;
  if (error instanceof RateLimitError) {
    const wait = error.retryAfterMs ? `; try again in ${Math.ceil(error.retryAfterMs / 1000)} s` : "";
    return `too many requests${wait}`;
  }
  if (error instanceof UnavailableError) {
    return context.baseUrl ? `cannot reach devex at ${context.baseUrl}: ${message}` : `unavailable: ${message}`;
  }
  if (error instanceof TimeoutError) return `timed out: ${message}`;
  if (error instanceof CancelledError) return "cancelled";
  // Not found, already exists, invalid argument, failed precondition: core's message names the thing.
  return message;
}
