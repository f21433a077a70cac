import { Code, ConnectError } from "@connectrpc/connect";

/** Default bound on one request to a login provider, in ms. */
export const defaultProviderTimeoutMs = 10_000;

/**
 * `fetch` for calls to a login provider: bounded by `timeoutMs` and the caller's signal;
 * a network failure or timeout becomes Unavailable naming the provider.
 */
export async function providerFetch(
  providerName: string,
  url: URL,
  init: RequestInit & { timeoutMs: number; signal?: AbortSignal | undefined },
): Promise<Response> {
  const { timeoutMs, signal, ...rest } = init;
  const timeout = AbortSignal.timeout(timeoutMs);
  try {
    return await fetch(url, { ...rest, signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
  } catch (error) {
    if (signal?.aborted) throw ConnectError.from(signal.reason, Code.Canceled);
    throw new ConnectError(`${providerName} cannot be reached`, Code.Unavailable, undefined, undefined, error);
  }
}
