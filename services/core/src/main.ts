import { createLogger, runMain } from "@devex/kit";
import { startCore } from "./app.js";
import { coreSettings } from "./config.js";

await runMain({
  command: "npm run core --",
  settings: coreSettings,
  async start(config) {
    const logger = createLogger({ service: "core", level: config.logLevel });
    const core = await startCore(config, logger);
    logger.info(
      {
        port: core.api.port,
        replPort: core.replOrigin.port,
        previewPort: core.previewOrigin?.port,
        url: core.publicUrl,
        replUrl: core.replPublicUrl,
      },
      "ready",
    );
    if (core.devApiKey) printWelcome(core.publicUrl, core.replPublicUrl, config.sandbox, core.devApiKey);
    return core;
  },
});

/** What a person starting the embedded mode needs: where it is, a key, and a first call. */
function printWelcome(url: string, replUrl: string, sandbox: "bwrap" | "none", apiKey: string): void {
  const target = url.replace(/\/+$/, "");
  const isolation =
    sandbox === "none"
      ? "NONE (--sandbox none): code in a repl runs as core's user and can read core's keys"
      : "bwrap: one sandbox and one unprivileged uid per repl";
  console.log(`
Devex is running.

  API        ${target}
  Repls      ${replUrl.replace(/\/+$/, "")}/<repl id>/   (runner API, with GetReplAccess's token)
  Sandboxes  ${isolation}
  API key    ${apiKey}   (an admin key of the user "dev"; kept in the data directory)

Try it:
  export DEVEX_API_KEY=${apiKey}
  npx buf curl --protocol grpc --http2-prior-knowledge -H "Authorization: Bearer $DEVEX_API_KEY" \\
    ${target}/devex.core.v1.TemplateService/ListTemplates
  npx buf curl --protocol grpc --http2-prior-knowledge -H "Authorization: Bearer $DEVEX_API_KEY" \\
    -d '{"name":"hello","templateName":"blank"}' ${target}/devex.core.v1.ReplService/CreateRepl

Press Ctrl-C to stop everything (runners included).
`);
}
