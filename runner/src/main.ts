import { createLogger, runMain, serverSettings, startServer } from "@devex/kit";
import { runnerRoutes } from "./routes.js";

await runMain({
  command: "npm run runner --",
  settings: serverSettings("runner", 8081),
  async start(config) {
    const logger = createLogger({ service: "runner", level: config.logLevel });
    return startServer({
      name: "runner",
      logger,
      port: config.port,
      host: config.host,
      shutdownGraceMs: config.shutdownGraceMs,
      routes: runnerRoutes(),
    });
  },
});
