import type { Interceptor } from "@connectrpc/connect";
import { ConnectError } from "@connectrpc/connect";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { codeName, observeStream } from "./logging.js";

/** The Prometheus metrics of one server. */
export interface RpcMetrics {
  /** The registry served on `/metrics`; services add their own metrics to it. */
  registry: Registry;
  /** Counts calls and errors by code, times them, and counts open streams. */
  interceptor: Interceptor;
  /** Open response streams right now, over all methods. */
  openStreams(): number;
}

/** Creates a registry with process metrics and the RPC metrics, and the interceptor that feeds them. */
export function createRpcMetrics(service: string): RpcMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  const calls = new Counter({
    name: "rpc_server_calls_total",
    help: "RPC calls handled, by method and result code.",
    labelNames: ["method", "code"],
    registers: [registry],
  });
  const duration = new Histogram({
    name: "rpc_server_duration_seconds",
    help: "RPC latency in seconds, by method (for streams: until the response stream ends).",
    labelNames: ["method"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const streams = new Gauge({
    name: "rpc_server_open_streams",
    help: "Response streams currently open, by method.",
    labelNames: ["method"],
    registers: [registry],
  });
  let open = 0;

  const interceptor: Interceptor = (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    const stopTimer = duration.startTimer({ method });
    const finish = (error: unknown) => {
      stopTimer();
      calls.inc({ method, code: error === undefined ? "ok" : codeName(ConnectError.from(error).code) });
    };
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (error) {
      finish(error);
      throw error;
    }
    if (!res.stream) {
      finish(undefined);
      return res;
    }
    open++;
    streams.inc({ method });
    return {
      ...res,
      message: observeStream(res.message, (error) => {
        open--;
        streams.dec({ method });
        finish(error);
      }),
    };
  };
  return { registry, interceptor, openStreams: () => open };
}
