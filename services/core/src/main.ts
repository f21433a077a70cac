import { setFlagsFromString } from "node:v8";
import { createLogger, runMain } from "@devex/kit";
import { startCore } from "./app.js";
import { coreSettings } from "./config.js";

// Archives pass through core as thousands of messages, whose short-lived objects outlive the
// small young generation (--max-semi-space-size=1) and pile up in the old one. By default V8
// lets the old generation grow several times over what is live before collecting it: core's
// resident memory climbed from 115 MB to 200 MB over eight save-stop-start rounds of a 54 MB
// workspace. Growing it by a quarter at a time keeps core near its live size (~135 MB).
// V8 reads the factor at every collection, so setting it here takes effect.
setFlagsFromString("--heap-growing-percent=25");

await runMain({
  command: "npm run core --",
  settings: coreSettings,
  async start(config) {
    const logger = createLogger({ service: "core", level: config.logLevel });
    const core = await startCore(config, logger);
    logger.info(
      { port: core.api.port, replPort: core.replOrigin.port, url: core.publicUrl, replUrl: core.replPublicUrl },
      "ready",
    );
    if (core.devApiKey) printWelcome(core.publicUrl, core.devApiKey);
    return core;
  },
});

/** What a person starting the embedded mode needs: where it is, a key, and a first call. */
function printWelcome(url: string, apiKey: string): void {
  const target = url.replace(/\/+$/, "");
  console.log(`
Devex is running.

  API        ${target}
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
