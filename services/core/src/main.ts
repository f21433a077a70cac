import { createLogger, runMain, serverSettings, startServer } from "@devex/kit";
import { coreRoutes } from "./routes.js";

await runMain({
  command: "npm run core --",
  settings: serverSettings("core", 8080),
  async start(config) {
    const logger = createLogger({ service: "core", level: config.logLevel });
    return startServer({
      name: "core",
      logger,
      port: config.port,
      host: config.host,
      shutdownGraceMs: config.shutdownGraceMs,
      routes: coreRoutes(),
    });
  },
});
