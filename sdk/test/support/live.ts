import { type CoreProcess, startCoreProcess } from "../../../services/core/test/support/core-process.js";

/** A real core (the bundle `npm run build` makes at the root) with local runners, and its dev API key. */
export interface LiveCore {
  core: CoreProcess;
  apiKey: string;
  /** Stops core (and with it its runners) and removes its data. */
  close(): Promise<void>;
}

/** Starts core on free ports with a fresh data directory. */
export async function startLiveCore(extraArgs: string[] = []): Promise<LiveCore> {
  const core = await startCoreProcess(extraArgs);
  const apiKey = await core.devApiKey();
  return {
    core,
    apiKey,
    async close() {
      await core.stop();
      await core.cleanup();
    },
  };
}

/** A repl name no other test uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
}
