/**
 * The Devex SDK for Node: repls, their files, commands and terminals, over gRPC (HTTP/2).
 * @packageDocumentation
 */
import { DevexClient } from "./client.js";
import { nodePlatform } from "./platform-node.js";
import type { DevexOptions } from "./types.js";

export * from "./exports.js";

/**
 * The Devex client. `new Devex()` reads `DEVEX_API_KEY` and `DEVEX_BASE_URL` from the environment.
 *
 * @example
 * ```ts
 * const devex = new Devex({ apiKey: "dvx_..." });
 * const repl = await (await devex.repls.create({ name: "hello", template: "node" })).start();
 * console.log((await repl.commands.run("node --version")).stdout);
 * ```
 */
export class Devex extends DevexClient {
  constructor(options: DevexOptions = {}) {
    super(options, nodePlatform);
  }
}
