import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { endpointConnection, endpointSessionManager, signRunnerToken } from "@devex/kit";
import type { Logger } from "pino";
import type { RunnerTarget } from "../orchestrator/runner-client.js";
import type { TokenKeys } from "../orchestrator/token-keys.js";
import type { TemplateCatalog } from "../templates/catalog.js";
import type { StoredRepl } from "./repository.js";

/** The tag of the process a template's start command runs as (ProcessService selects by it). */
export const appProcessTag = "app";

/** Options for {@link createStartCommandLauncher}. */
export interface StartCommandOptions {
  templates: TemplateCatalog;
  tokenKeys: Pick<TokenKeys, "privateKey">;
  /** How long starting the process may take, in ms. Default 15000. */
  callTimeoutMs?: number;
  logger?: Logger;
}

/**
 * What runs once a repl is running: its template's start command, if any, as a tracked process
 * tagged `app` (`bash -lc <command>` in the workspace), started with a user token signed for the
 * owner, so it is the owner's process like any other. The call returns once the process was
 * spawned; how the command fares (it may exit at once) is the process's exit status, seen through
 * ProcessService, never a failure of the start.
 */
export function createStartCommandLauncher(
  options: StartCommandOptions,
): (repl: StoredRepl, runner: RunnerTarget) => Promise<void> {
  const callTimeoutMs = options.callTimeoutMs ?? 15_000;
  return async (repl, runner) => {
    const template = await options.templates.get(repl.templateName);
    const command = template?.startCommand.trim();
    if (!command) return;
    const token = await signRunnerToken(options.tokenKeys.privateKey, {
      replId: repl.id,
      userId: repl.ownerUserId,
      role: "user",
      ttlMs: 60_000,
    });
    const sessions = endpointSessionManager(runner.endpoint);
    const client = createClient(
      ProcessService,
      createGrpcTransport({
        baseUrl: endpointConnection(runner.endpoint).origin,
        sessionManager: sessions,
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${token}`);
            return next(req);
          },
        ],
      }),
    );
    // The process outlives this call: once it is started, the stream is let go.
    const stream = new AbortController();
    try {
      for await (const event of client.startProcess(
        { config: { argv: ["bash", "-lc", command], tag: appProcessTag } },
        { signal: stream.signal, timeoutMs: callTimeoutMs },
      )) {
        if (event.event.case === "started") {
          options.logger?.info(
            { replId: repl.id, pid: event.event.value.process?.pid, command },
            "started the template's start command",
          );
          break;
        }
      }
    } finally {
      stream.abort();
      sessions.abort();
    }
  };
}
