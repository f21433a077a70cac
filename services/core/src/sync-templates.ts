import { resolve } from "node:path";
import { createLogger, loadConfigOrExit } from "@devex/kit";
import { coreSettings } from "./config.js";
import { syncTemplates } from "./templates/store-catalog.js";
import { openWorkspaceStore } from "./workspaces/from-config.js";

/**
 * `npm run templates:sync`: copies the templates folder into the workspace store core reads
 * them from, with core's own settings (flags or DEVEX_* variables: --templates-dir,
 * --workspace-store, --s3-*). Prints what changed; exits 1 on failure, 2 on bad settings.
 */
const config = loadConfigOrExit("npm run templates:sync --", coreSettings);
const logger = createLogger({ service: "templates-sync", level: config.logLevel });
const objects = await openWorkspaceStore(config, resolve(config.dataDir));
try {
  const report = await syncTemplates(resolve(config.templatesDir), objects, logger);
  for (const [what, names] of Object.entries(report)) {
    console.log(`${what.padEnd(9)} ${names.length === 0 ? "-" : names.join(", ")}`);
  }
} catch (error) {
  console.error(`templates sync failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
} finally {
  await objects.close();
}
