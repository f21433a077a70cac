import { resolve } from "node:path";
import { ConfigError } from "@devex/kit";
import type { Logger } from "pino";
import type { CoreConfig } from "../config.js";
import { Allowlist } from "../egress/index.js";
import type { Orchestrator, RunnerResources } from "./orchestrator.js";
import type { TokenKeys } from "./token-keys.js";

/** The orchestrator settings of core's configuration. */
export type OrchestratorConfig = Pick<
  CoreConfig,
  | "orchestrator"
  | "runnerEntry"
  | "runnerStandbyCount"
  | "sandbox"
  | "sandboxRoot"
  | "sandboxUidBase"
  | "sandboxMemoryBytes"
  | "sandboxCpuMillicores"
  | "sandboxMaxProcesses"
  | "sandboxNetwork"
  | "sandboxAllowHosts"
>;

/** Creates the orchestrator the configuration names; `dataDir` holds the local driver's sandboxes and records. */
export async function createOrchestrator(
  config: OrchestratorConfig,
  dataDir: string,
  tokenKeys: TokenKeys,
  logger: Logger,
): Promise<Orchestrator> {
  // One driver today; Kubernetes is the next, loaded only when chosen.
  const { createLocalOrchestrator, defaultSandboxRoot } = await import("./local/index.js");
  const sandboxRoot = config.sandboxRoot ?? (await defaultSandboxRoot(dataDir));
  logger.info({ sandboxRoot }, "sandboxes' folders");
  return createLocalOrchestrator({
    dataDir,
    runnerEntry: resolve(config.runnerEntry),
    tokenKeys,
    logger,
    sandbox: config.sandbox,
    sandboxRoot,
    sandboxUidBase: config.sandboxUidBase,
    network: { mode: config.sandboxNetwork, allowHosts: allowHostsOf(config) },
    standbyRunners: config.runnerStandbyCount,
  });
}

/**
 * The egress allowlist (`--sandbox-allow-hosts`, comma-separated), checked at start: a bad
 * entry stops core with a message naming it rather than failing each repl later.
 */
export function allowHostsOf(config: Pick<CoreConfig, "sandboxNetwork" | "sandboxAllowHosts">): string[] {
  const hosts = (config.sandboxAllowHosts ?? "")
    .split(",")
    .map((host) => host.trim())
    .filter((host) => host !== "");
  if (config.sandboxNetwork === "allowlist") {
    if (hosts.length === 0) {
      throw new ConfigError("--sandbox-network allowlist (DEVEX_SANDBOX_NETWORK) needs --sandbox-allow-hosts");
    }
    try {
      Allowlist.parse(hosts);
    } catch (error) {
      throw new ConfigError(`--sandbox-allow-hosts (DEVEX_SANDBOX_ALLOW_HOSTS): ${(error as Error).message}`);
    }
  }
  return hosts;
}

/** A repl's limits: the server's overrides, else its template's, else `defaults`. */
export function resourcesFor(
  config: OrchestratorConfig,
  template: Partial<RunnerResources> | undefined,
  defaults: RunnerResources,
): RunnerResources {
  return {
    memoryBytes: config.sandboxMemoryBytes ?? template?.memoryBytes ?? defaults.memoryBytes,
    cpuMillicores: config.sandboxCpuMillicores ?? template?.cpuMillicores ?? defaults.cpuMillicores,
    maxProcesses: config.sandboxMaxProcesses ?? template?.maxProcesses ?? defaults.maxProcesses,
  };
}
