/**
 * The Devex SDK for browsers: the same API as in Node, over the Connect protocol with fetch. Terminals use
 * the browser form (an output stream plus unary writes); uploads are limited to 4 MiB.
 * @packageDocumentation
 */
import { DevexClient } from "./client.js";
import { browserPlatform } from "./platform-browser.js";
import type { DevexOptions } from "./types.js";

export * from "./exports.js";

/** The Devex client, for browsers: pass `apiKey` and `baseUrl` (there is no environment to read). */
export class Devex extends DevexClient {
  constructor(options: DevexOptions = {}) {
    super(options, browserPlatform);
  }
}
