import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { createLogger, runMain, type Server, ServingStatus, startServer } from "@devex/kit";
import { runnerSettings, standbyConfigError } from "./config.js";
import { startEgressForwarder } from "./egress.js";
import { startPreviewProxy } from "./preview/preview-proxy.js";
import { createRunner } from "./runner.js";
import { warmUp } from "./standby.js";

// `pkill node` or `killall node` in a repl must not take its runner down: they match the
// process name (/proc/self/comm), which this sets, along with the command line ps shows.
process.title = "devex-runner";

/** The services that a standby refuses until Assign (RunnerService serves Assign). */
const replServices = [TerminalService.typeName, FilesystemService.typeName, ProcessService.typeName];

await runMain({
  command: "npm run runner --",
  settings: runnerSettings,
  async start(config) {
    const misfit = standbyConfigError(config);
    if (misfit) {
      console.error(`${misfit.message}\n\nRun with --help to see every option.`);
      process.exit(2);
    }
    const logger = createLogger({ service: "runner", level: config.logLevel });
    // A standby warms up before it listens: core sees its socket once it is ready.
    if (config.standby) await warmUp(config, logger);
    let server: Server | undefined;
    const runner = await createRunner(config, logger, {
      onDevCredentials(dev) {
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
      },
      onAssigned() {
        for (const name of replServices) server?.health.set(name, ServingStatus.SERVING);
      },
    });
    server = await startServer({
      name: "runner",
      logger,
      ...(config.socket ? { path: config.socket } : { port: config.port, host: config.host }),
      shutdownGraceMs: config.shutdownGraceMs,
      routes: runner.routes,
      interceptors: runner.interceptors,
      compression: false,
    });
    if (config.standby) {
      // Until Assign, the repl's services refuse every call: health says so for each.
      for (const name of replServices) server.health.set(name, ServingStatus.NOT_SERVING);
    }
    const serving = server;
    // The repl's web ports, for core's preview origin (a standby serves them too once assigned).
    const preview =
      config.previewSocket !== undefined || config.previewPort !== undefined
        ? await startPreviewProxy({
            ...(config.previewSocket !== undefined ? { socketPath: config.previewSocket } : {}),
            ...(config.previewPort !== undefined ? { port: config.previewPort } : {}),
            activity: runner.context.activity,
            logger,
          })
        : undefined;
    // The sandbox's only way out, when it has one: loopback port 3128 to core's egress proxy.
    const egress = config.egressSocket ? await startEgressForwarder({ socketPath: config.egressSocket }) : undefined;
    // Ready to be handed a repl only once every socket core uses is there.
    if (config.standby) logger.info({ standbyId: config.standbyId }, "standby");
    return {
      async close() {
        await egress?.close();
        await preview?.close();
        await runner.shutdown(config.shutdownGraceMs, "signal");
        await serving.close();
      },
    };
  },
});
