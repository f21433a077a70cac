import { createConnectTransport } from "@connectrpc/connect-web";
import type { Platform } from "./internal/context.js";

/** Browsers: the Connect protocol over fetch (binary), which has no client or bidirectional streams. */
export const browserPlatform: Platform = {
  createTransport: (baseUrl, interceptors) => createConnectTransport({ baseUrl, interceptors, useBinaryFormat: true }),
  fullDuplex: false,
  env: () => undefined,
};
