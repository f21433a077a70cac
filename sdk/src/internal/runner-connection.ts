import { timestampMs } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import type { ReplAccess } from "@devex/gen/devex/core/v1/repl_pb.js";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import type { Context, UnaryOptions } from "./context.js";

/** Typed clients of one runner's services. */
export interface RunnerClients {
  files: Client<typeof FilesystemService>;
  processes: Client<typeof ProcessService>;
  terminals: Client<typeof TerminalService>;
}

interface CachedAccess {
  endpointUrl: string;
  token: string;
  /** When the token is refreshed, in ms since the epoch: before it expires, by a third of its lifetime (at most 30 s). */
  refreshAtMs: number;
}

/**
 * The way to one repl's runner: a token cache (refreshed with GetReplAccess before it expires, and once
 * after an Unauthenticated answer) and the clients over a transport to the repl's endpoint.
 */
export class RunnerConnection {
  private access: CachedAccess | undefined;
  private pending: Promise<CachedAccess> | undefined;
  private clientsFor: { endpointUrl: string; clients: RunnerClients } | undefined;

  constructor(
    private readonly context: Context,
    readonly replId: string,
  ) {}

  /** Takes access that StartRepl already returned, so the first call needs no GetReplAccess. */
  seed(access: ReplAccess | undefined): void {
    if (access?.token) this.access = cache(access);
  }

  /** Forgets the token, so the next call fetches a fresh one. */
  invalidate(): void {
    this.access = undefined;
  }

  /** Access that is not about to expire, fetched when needed (one fetch at a time). */
  private async current(): Promise<CachedAccess> {
    if (this.access && Date.now() < this.access.refreshAtMs) return this.access;
    // Shared by concurrent callers, so no one caller's signal may cancel it.
    this.pending ??= this.context.repls
      .getReplAccess({ replId: this.replId }, { timeoutMs: this.context.requestTimeoutMs })
      .then((response) => {
        if (!response.access) throw new ConnectError("core returned no access", Code.Internal);
        this.access = cache(response.access);
        return this.access;
      })
      .finally(() => {
        this.pending = undefined;
      });
    return this.pending;
  }

  /** Clients of the runner, over a transport to its current endpoint. */
  async clients(signal?: AbortSignal): Promise<RunnerClients> {
    const { endpointUrl } = await raceSignal(this.current(), signal);
    if (this.clientsFor?.endpointUrl !== endpointUrl) {
      const auth: Interceptor = (next) => async (req) => {
        req.header.set("authorization", `Bearer ${(await raceSignal(this.current(), req.signal)).token}`);
        return next(req);
      };
      const transport = this.context.platform.createTransport(endpointUrl, [auth, ...this.context.interceptors]);
      this.clientsFor = {
        endpointUrl,
        clients: {
          files: createClient(FilesystemService, transport),
          processes: createClient(ProcessService, transport),
          terminals: createClient(TerminalService, transport),
        },
      };
    }
    return this.clientsFor.clients;
  }

  /**
   * Runs a unary runner call bounded by `timeoutMs` (default requestTimeoutMs), mapping its error. A call the
   * runner refused as Unauthenticated was not applied, so it is retried once with a fresh token.
   */
  async call<T>(
    call: (clients: RunnerClients, options: UnaryOptions) => Promise<T>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined = this.context.requestTimeoutMs,
  ): Promise<T> {
    try {
      try {
        return await call(await this.clients(signal), { signal, timeoutMs });
      } catch (error) {
        if (!isUnauthenticated(error) || signal?.aborted) throw error;
        this.invalidate();
        return await call(await this.clients(signal), { signal, timeoutMs });
      }
    } catch (error) {
      throw this.context.error(error, signal);
    }
  }
}

/** Whether a runner refused the token (expired or revoked). */
export function isUnauthenticated(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Unauthenticated;
}

/** The promise, or a rejection with the signal's reason as soon as it aborts. */
function raceSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () =>
      reject(new ConnectError("the call was cancelled", Code.Canceled, undefined, undefined, signal.reason));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function cache(access: ReplAccess): CachedAccess {
  const now = Date.now();
  const expiresAtMs = access.expiresAt ? timestampMs(access.expiresAt) : now + 60_000;
  const marginMs = Math.min(30_000, (expiresAtMs - now) / 3);
  return { endpointUrl: access.endpointUrl, token: access.token, refreshAtMs: expiresAtMs - marginMs };
}
