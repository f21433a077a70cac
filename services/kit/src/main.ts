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
 * The entry point of a service: loads and validates its configuration (printing every
 * bad value and exiting with status 2), starts it, and stops it gracefully on SIGINT or
 * SIGTERM (a second signal exits at once).
 */
export async function runMain<S extends Settings>(options: MainOptions<S>): Promise<void> {
  let config: ConfigOf<S>;
  try {
    config = loadConfig(options.settings);
  } catch (error) {
    if (error instanceof ConfigError) {
      if (error.help) {
        console.log(usage(options.command, options.settings));
        process.exit(0);
      }
      console.error(`${error.message}\n\nRun with --help to see every option.`);
      process.exit(2);
    }
    throw error;
  }
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
