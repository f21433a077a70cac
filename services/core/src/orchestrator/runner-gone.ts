import { Code, ConnectError } from "@connectrpc/connect";
import { createErrorMappingInterceptor } from "@devex/kit";

/**
 * Turns a call to a runner that ends as Canceled, although core did not cancel it, into
 * Unavailable: the runner went away. A runner that dies in the middle of a stream closes its
 * connection, which HTTP/2 reports as a stream closed with CANCEL, and a runner whose server
 * shuts down cancels its calls; for core's callers either is a runner that is down, as one
 * that refuses connections is. A call the caller cancelled (or whose deadline passed) keeps
 * its code.
 */
export const runnerGoneInterceptor = createErrorMappingInterceptor((error, req) => {
  if (req.signal.aborted || !(error instanceof ConnectError) || error.code !== Code.Canceled) return error;
  return new ConnectError(
    `the runner went away (${error.rawMessage})`,
    Code.Unavailable,
    error.metadata,
    undefined,
    error,
  );
});
