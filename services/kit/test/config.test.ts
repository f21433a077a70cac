import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, serverSettings, usage } from "../src/index.js";

const settings = serverSettings("runner", 8081);

describe("loadConfig", () => {
  it("uses defaults when nothing is given", () => {
    const config = loadConfig(settings, { argv: [], env: {} });
    expect(config).toEqual({ port: 8081, host: "127.0.0.1", logLevel: "info", shutdownGraceMs: 10_000 });
  });

  it("prefers flags over the environment", () => {
    const config = loadConfig(settings, { argv: ["--port", "9000"], env: { DEVEX_RUNNER_PORT: "9100" } });
    expect(config.port).toBe(9000);
    expect(loadConfig(settings, { argv: [], env: { DEVEX_RUNNER_PORT: "9100" } }).port).toBe(9100);
  });

  it("names every bad value with its flag, variable and source", () => {
    let error: unknown;
    try {
      loadConfig(settings, {
        argv: ["--port", "70000"],
        env: { DEVEX_LOG_LEVEL: "loud", DEVEX_RUNNER_SHUTDOWN_GRACE_MS: "soon" },
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    expect(message).toContain('--port (DEVEX_RUNNER_PORT), from --port: must be between 0 and 65535 (got "70000")');
    expect(message).toContain("--log-level (DEVEX_LOG_LEVEL), from DEVEX_LOG_LEVEL");
    expect(message).toContain('(got "loud")');
    expect(message).toContain("--shutdown-grace-ms (DEVEX_RUNNER_SHUTDOWN_GRACE_MS)");
  });

  it("refuses unknown flags", () => {
    expect(() => loadConfig(settings, { argv: ["--prot", "1"], env: {} })).toThrow(/invalid command line: .*--prot/);
  });

  it("reports --help as a help request and lists every option", () => {
    expect(() => loadConfig(settings, { argv: ["--help"], env: {} })).toThrow(
      expect.objectContaining({ help: true }) as unknown as Error,
    );
    const text = usage("npm run runner --", settings);
    for (const flag of ["--port", "--host", "--log-level", "--shutdown-grace-ms", "DEVEX_RUNNER_PORT"]) {
      expect(text).toContain(flag);
    }
  });
});
