import { createLogger, runMain, startServer } from "@devex/kit";
import { runnerSettings, standbyConfigError } from "./config.js";
import { createRunner } from "./runner.js";
import { awaitAssignment } from "./standby.js";

await runMain({
  command: "npm run runner --",
  settings: runnerSettings,
  async start(loaded) {
    const misfit = standbyConfigError(loaded);
    if (misfit) {
      console.error(`${misfit.message}\n\nRun with --help to see every option.`);
      process.exit(2);
    }
    const logger = createLogger({ service: "runner", level: loaded.logLevel });
    let config = loaded;
    if (loaded.standby) {
      const outcome = await awaitAssignment(loaded, logger);
      // Core (its parent) went away before needing it: nothing was started, nothing to stop.
      if (outcome.kind === "orphaned") process.exit(0);
      if (outcome.kind === "invalid") {
        logger.error({ reason: outcome.reason }, "invalid standby assignment");
        process.exit(2);
      }
      config = outcome.config;
    }
    const runner = await createRunner(config, logger, (dev) => {
      process.stderr.write(
        [
          "",
          "Development mode: this runner accepts tokens signed by a key it made at start.",
          `  repl id:     ${dev.replId}`,
          `  user token:  ${dev.userToken}`,
          `  core token:  ${dev.coreToken}   (RunnerService)`,
          "Call it with: -H 'Authorization: Bearer <token>'",
          "",
          "",
        ].join("\n"),
      );
    });
    const server = await startServer({
      name: "runner",
      logger,
      port: config.port,
      host: config.host,
      shutdownGraceMs: config.shutdownGraceMs,
      routes: runner.routes,
      interceptors: runner.interceptors,
      compression: false,
    });
    return {
      async close() {
        await runner.shutdown(config.shutdownGraceMs, "signal");
        await server.close();
      },
    };
  },
});
