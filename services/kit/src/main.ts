import { ConfigError, type ConfigOf, loadConfig, type Settings, usage } from "./config.js";

/** Options for {@link runMain}. */
export interface MainOptions<S extends Settings> {
  /** How the command is invoked, for `--help` (`npm run core --`). */
  command: string;
  settings: S;
  /** Starts the service; returns how to stop it. */
  start(config: ConfigOf<S>): Promise<{ close(): Promise<void> }>;
}

/**
 * Loads and validates the configuration of a command: prints the usage and exits 0 on
 * `--help`, prints every bad value and exits 2 on a mistake.
 */
export function loadConfigOrExit<S extends Settings>(command: string, settings: S): ConfigOf<S> {
  try {
    return loadConfig(settings);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    if (error.help) {
      console.log(usage(command, settings));
      process.exit(0);
    }
    console.error(`${error.message}\n\nRun with --help to see every option.`);
    process.exit(2);
  }
}

/**
 * The entry point of a service: loads and validates its configuration (printing every
 * bad value and exiting with status 2), starts it, and stops it gracefully on SIGINT or
 * SIGTERM (a second signal exits at once).
 */
export async function runMain<S extends Settings>(options: MainOptions<S>): Promise<void> {
  const config = loadConfigOrExit(options.command, options.settings);
  const service = await options.start(config);
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      process.exit(130);
    }
    stopping = true;
    service.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(`shutdown after ${signal} failed:`, error);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
