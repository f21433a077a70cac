import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Platform } from "./internal/context.js";

/** Node: gRPC over HTTP/2 (h2c for http:// URLs), which carries bidirectional streams. */
export const nodePlatform: Platform = {
  createTransport: (baseUrl, interceptors) => createGrpcTransport({ baseUrl, interceptors }),
  fullDuplex: true,
  env: (name) => process.env[name],
};
