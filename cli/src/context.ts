import { Devex, NotFoundError, type Repl } from "@devex/sdk";
import { CliError } from "./cli-error.js";
import { resolveCredentials } from "./config.js";
import type { Output } from "./output.js";

/** What every command gets: where to write, the environment, and a way to reach core. */
export interface CommandContext {
  readonly output: Output;
  readonly stdin: NodeJS.ReadStream;
  readonly env: NodeJS.ProcessEnv;
  /** Core's URL once `connect` has resolved it, for error messages. */
  readonly baseUrl: string | undefined;
  /** An SDK client with the credentials from the environment or the config file. */
  connect(): Promise<Devex>;
  /** A repl by id or name, or a clear "not found" error naming what was asked for. */
  findRepl(devex: Devex, idOrName: string): Promise<Repl>;
}

/** Options of `createCommandContext`. */
export interface CommandContextOptions {
  output: Output;
  stdin: NodeJS.ReadStream;
  env: NodeJS.ProcessEnv;
}

/** The context commands run in; the SDK client is made on first use, so `login` and `--help` need none. */
export function createCommandContext(options: CommandContextOptions): CommandContext {
  let baseUrl: string | undefined;
  let devex: Devex | undefined;
  return {
    ...options,
    get baseUrl() {
      return baseUrl;
    },
    async connect() {
      if (devex) return devex;
      const credentials = await resolveCredentials(options.env);
      baseUrl = credentials.baseUrl;
      devex = new Devex({ baseUrl: credentials.baseUrl, apiKey: credentials.apiKey });
      return devex;
    },
    async findRepl(client, idOrName) {
      try {
        return await client.repls.get(idOrName);
      } catch (error) {
        if (error instanceof NotFoundError) throw new CliError(`repl "${idOrName}" not found`, 1, { cause: error });
        throw error;
      }
    },
  };
}
