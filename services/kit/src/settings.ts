import { durationMsSchema, oneOfSchema, portSchema, setting, textSchema, withDefault } from "./config.js";

/** The settings every server has: where it listens, how it logs, how long shutdown waits. */
export function serverSettings(service: string, defaultPort: number) {
  const prefix = `DEVEX_${service.toUpperCase()}`;
  return {
    port: setting({
      flag: "port",
      env: `${prefix}_PORT`,
      schema: withDefault(portSchema, defaultPort),
      description: `TCP port to listen on (0 = any free port). Default ${defaultPort}.`,
    }),
    host: setting({
      flag: "host",
      env: `${prefix}_HOST`,
      schema: withDefault(textSchema, "127.0.0.1"),
      description: "Address to listen on. Default 127.0.0.1.",
    }),
    logLevel: setting({
      flag: "log-level",
      env: "DEVEX_LOG_LEVEL",
      schema: withDefault(oneOfSchema(["fatal", "error", "warn", "info", "debug", "trace", "silent"]), "info"),
      description: "Log level: fatal, error, warn, info, debug, trace or silent. Default info.",
    }),
    shutdownGraceMs: setting({
      flag: "shutdown-grace-ms",
      env: `${prefix}_SHUTDOWN_GRACE_MS`,
      schema: withDefault(durationMsSchema(0, 600_000), 10_000),
      description: "How long shutdown lets open calls finish, in ms. Default 10000.",
    }),
  };
}
