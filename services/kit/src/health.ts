import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthListResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@devex/gen/grpc/health/v1/health_pb.js";
import { truncateText } from "./error-bounds.js";

export { ServingStatus };

/**
 * The serving status of a server and of each of its services, served as
 * `grpc.health.v1.Health`. The empty service name stands for the whole server.
 */
export class HealthRegistry {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<() => void>();

  /** Sets the status of one service ("" for the server as a whole) and wakes every watcher. */
  set(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const wake of this.watchers) wake();
  }

  /** Sets every known service, and the server, to one status (used at start and shutdown). */
  setAll(status: ServingStatus): void {
    for (const service of [...this.statuses.keys(), ""]) this.set(service, status);
  }

  /** The status of a service, or undefined when the service is not known. */
  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /** Registers the Health service on a router. */
  routes(router: ConnectRouter): void {
    router.service(Health, {
      check: (req) => {
        const status = this.get(req.service);
        if (status === undefined) {
          // The name is the caller's: echoed only in part, so the answer stays small.
          throw new ConnectError(`unknown service "${truncateText(req.service, 256)}"`, Code.NotFound);
        }
        return create(HealthCheckResponseSchema, { status });
      },
      list: () => {
        const statuses: Record<string, HealthCheckResponse> = {};
        for (const [service, status] of this.statuses) {
          statuses[service] = create(HealthCheckResponseSchema, { status });
        }
        return create(HealthListResponseSchema, { statuses });
      },
      watch: (req, ctx) => this.watch(req.service, ctx.signal),
    });
  }

  /** Yields the current status, then each change, until the signal aborts. */
  private async *watch(service: string, signal: AbortSignal): AsyncGenerator<HealthCheckResponse> {
    let changed: () => void = () => {};
    let pending = true;
    const wake = () => {
      pending = true;
      changed();
    };
    const onAbort = () => changed();
    this.watchers.add(wake);
    signal.addEventListener("abort", onAbort);
    try {
      let last: ServingStatus | undefined;
      while (!signal.aborted) {
        if (pending) {
          pending = false;
          const status = this.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
          if (status !== last) {
            last = status;
            yield create(HealthCheckResponseSchema, { status });
          }
          continue;
        }
        await new Promise<void>((resolve) => {
          changed = resolve;
        });
      }
      // Shutdown (or the caller going away) ends the watch with the reason, not as a clean end.
      signal.throwIfAborted();
    } finally {
      this.watchers.delete(wake);
      signal.removeEventListener("abort", onAbort);
    }
  }
}
