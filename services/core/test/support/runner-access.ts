import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

/** What StartRepl and GetReplAccess hand out: where a repl's runner is, and a user token for it. */
export interface RunnerAccess {
  endpointUrl: string;
  token: string;
}

/** A gRPC transport to a repl's runner through core's repl origin, with the access's user token. */
export function runnerTransport(access: RunnerAccess | undefined): Transport {
  return createGrpcTransport({
    baseUrl: access?.endpointUrl ?? "",
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", `Bearer ${access?.token ?? ""}`);
        return next(req);
      },
    ],
  });
}
