import { type Client, type ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TemplateService } from "@devex/gen/devex/core/v1/template_pb.js";
import { type DevexError, defaultMapError, toDevexError } from "../errors.js";
import type { DevexOptions } from "../types.js";
import { RunnerConnection } from "./runner-connection.js";

/** What differs between Node and browsers: the transport, and where defaults come from. */
export interface Platform {
  /** A transport to `baseUrl` running `interceptors` on every call. */
  createTransport(baseUrl: string, interceptors: Interceptor[]): Transport;
  /** Whether the transport runs client and bidirectional streams (HTTP/2); browsers' does not. */
  readonly fullDuplex: boolean;
  /** An environment variable, where there is an environment (Node). */
  env(name: string): string | undefined;
}

/** Options a unary call takes from the SDK. */
export interface UnaryOptions {
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

/** The state one Devex client shares with every module: settings, core clients and runner connections. */
export class Context {
  readonly requestTimeoutMs: number;
  readonly lifecycleTimeoutMs: number;
  readonly reconnectTimeoutMs: number;
  readonly mapError: (error: ConnectError) => DevexError;
  readonly interceptors: Interceptor[];
  readonly repls: Client<typeof ReplService>;
  readonly templates: Client<typeof TemplateService>;
  private readonly runners = new Map<string, RunnerConnection>();

  constructor(
    options: DevexOptions,
    readonly platform: Platform,
  ) {
    this.requestTimeoutMs = options.requestTimeoutMs ?? 60_000;
    this.lifecycleTimeoutMs = options.lifecycleTimeoutMs ?? 180_000;
    this.reconnectTimeoutMs = options.reconnectTimeoutMs ?? 30_000;
    this.mapError = options.mapError ?? defaultMapError;
    this.interceptors = options.interceptors ?? [];
    const apiKey = options.apiKey ?? platform.env("DEVEX_API_KEY");
    const baseUrl = options.baseUrl ?? platform.env("DEVEX_BASE_URL") ?? "http://127.0.0.1:8080";
    const auth: Interceptor = (next) => (req) => {
      if (apiKey) req.header.set("authorization", `Bearer ${apiKey}`);
      return next(req);
    };
    const transport = platform.createTransport(baseUrl, [auth, ...this.interceptors]);
    this.repls = createClient(ReplService, transport);
    this.templates = createClient(TemplateService, transport);
  }

  /** The connection to a repl's runner, shared by every handle of that repl (one token cache per repl). */
  runner(replId: string): RunnerConnection {
    let runner = this.runners.get(replId);
    if (!runner) {
      runner = new RunnerConnection(this, replId);
      this.runners.set(replId, runner);
    }
    return runner;
  }

  /** Runs a unary call bounded by `timeoutMs` (default requestTimeoutMs), mapping its error. */
  async call<T>(
    call: (options: UnaryOptions) => Promise<T>,
    signal: AbortSignal | undefined,
    timeoutMs = this.requestTimeoutMs,
  ): Promise<T> {
    try {
      return await call({ signal, timeoutMs });
    } catch (error) {
      throw this.error(error, signal);
    }
  }

  /** Maps anything a call threw to a DevexError. */
  error(error: unknown, signal?: AbortSignal): DevexError {
    return toDevexError(error, this.mapError, signal);
  }
}

/** Reads every page of a paged list. */
export async function allPages<T>(page: (token: string) => Promise<{ items: T[]; next: string }>): Promise<T[]> {
  const items: T[] = [];
  let token = "";
  do {
    const result = await page(token);
    items.push(...result.items);
    token = result.next;
  } while (token);
  return items;
}

/** Whether the signal aborted, so that a stream ending now is the caller's doing. */
export function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted ?? false;
}

/** A signal that aborts with either of two. */
export function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal {
  return AbortSignal.any(signals.filter((s): s is AbortSignal => s !== undefined));
}

/** Resolves after `ms`, or rejects when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
