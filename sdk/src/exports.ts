// The public surface shared by the Node and browser entries.
export { Code, ConnectError } from "@connectrpc/connect";
export { DevexClient } from "./client.js";
export {
  AlreadyExistsError,
  AuthenticationError,
  CancelledError,
  ConflictError,
  DataLossError,
  DevexError,
  type DevexErrorOptions,
  defaultMapError,
  type ErrorDetail,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  TimeoutError,
  UnavailableError,
} from "./errors.js";
export { Repl } from "./repl.js";
export type * from "./types.js";
