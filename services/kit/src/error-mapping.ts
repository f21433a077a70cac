import type { Interceptor, StreamRequest, UnaryRequest } from "@connectrpc/connect";

/**
 * An interceptor that passes the error a call ends with through `map` and throws what it
 * returns: also an error a response stream throws while it is read. `map` gets the request,
 * whose signal tells whether the caller cancelled.
 */
export function createErrorMappingInterceptor(
  map: (error: unknown, req: UnaryRequest | StreamRequest) => unknown,
): Interceptor {
  return (next) => async (req) => {
    try {
      const res = await next(req);
      if (!res.stream) return res;
      const messages = res.message;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* messages;
          } catch (error) {
            throw map(error, req);
          }
        })(),
      };
    } catch (error) {
      throw map(error, req);
    }
  };
}
