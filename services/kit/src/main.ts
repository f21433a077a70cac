import { setFlagsFromString } from "node:v8";
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
 * SIGTERM (a second signal exits at once). It also keeps the service's heap near its live
 * size (see keepOldGenerationNearLiveSize).
 */
export async function runMain<S extends Settings>(options: MainOptions<S>): Promise<void> {
  keepOldGenerationNearLiveSize();
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

/**
 * Streams (archives, terminal output) pass through the services as thousands of messages
 * whose short-lived objects outlive the small young generation (--max-semi-space-size=1)
 * and pile up in the old one, which V8 by default lets grow several times over what is live
 * before collecting it: core's resident memory climbed from 115 MB to 203 MB over eight
 * save-stop-start rounds of a 54 MB workspace, a runner's from 93 MB to 113 MB over 60,000
 * keystrokes, with the live heap unchanged. Letting it double at most keeps them near their
 * live size (core levels off at 134 MB). A tighter factor costs more than it saves: V8's
 * limit also counts the buffers a stream allocates, and at 25% or 50% a runner exporting a
 * 54 MB archive ran a full collection every few megabytes (about 18 per export, a third of
 * its CPU time); at 100% it runs one or two. V8 reads the factor at every collection.
 */
function keepOldGenerationNearLiveSize(): void {
  setFlagsFromString("--heap-growing-percent=100");
}
