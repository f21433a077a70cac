import { createLogger, runMain, startServer } from "@devex/kit";
import { runnerSettings } from "./config.js";
import { createRunner } from "./runner.js";

await runMain({
  command: "npm run runner --",
  settings: runnerSettings,
  async start(config) {
    const logger = createLogger({ service: "runner", level: config.logLevel });
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
