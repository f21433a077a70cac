/**
 * The orchestrator: where runners run. The local driver starts one process per active
 * repl; the Kubernetes driver (one Deployment per repl) fits the same interface. Starting
 * is asynchronous: `start` asks for a runner, `waitReady` waits for it to be healthy.
 */

/** The limits of a repl's sandbox; every field is set (the template's value, else the server's default). */
export interface RunnerResources {
  /** Memory of the repl's programs together, in bytes (the runner itself is not counted). */
  memoryBytes: number;
  /** CPU, in thousandths of a core. */
  cpuMillicores: number;
  /** Processes and threads of the repl's programs at once. */
  maxProcesses: number;
}

/** What a runner is started with. */
export interface RunnerSpec {
  replId: string;
  /** The repl's owner (labels, logs). */
  userId: string;
  templateName: string;
  /** The template's runner image (Kubernetes); the local driver runs the host's runner bundle instead. */
  image?: string;
  resources: RunnerResources;
  /** Environment variables for the repl's programs (never core's own). */
  env?: Record<string, string>;
  /** The ports the template's app listens on (previews, network policies). */
  ports?: number[];
}

/** The phase of a runner as the orchestrator sees it. */
export type RunnerPhase = "starting" | "ready" | "stopping" | "exited";

/** A runner the orchestrator knows about. */
export interface RunnerInstance {
  /**
   * This runner's identity, new with every start (the local driver's sandbox id, a pod's
   * uid): a repl's record names the runner it started, so a core that finds another runner
   * there (a newer start's, or a leftover) never takes one for the other.
   */
  id: string;
  replId: string;
  userId: string;
  phase: RunnerPhase;
  /**
   * Where core reaches the runner's API: `unix:/path` (the local driver: a socket in a
   * directory bound into the sandbox) or `http://host:port` (a Service on Kubernetes).
   */
  endpoint: string;
  /** Where core reaches the runner's preview proxy (same forms); empty while unknown. */
  previewEndpoint?: string;
  startedAtMs: number;
  /** Why it exited or is not ready, when known. */
  detail?: string;
}

/** Options for {@link Orchestrator.stop}. */
export interface StopRunnerOptions {
  /** Stop the repl's runner only if it is this one ({@link RunnerInstance.id}). */
  runnerId?: string;
}

/** The orchestration driver. Every method is idempotent. */
export interface Orchestrator {
  /** The driver's name, for logs (`local`, `kubernetes`). */
  readonly driver: string;
  /** Asks for a runner for the repl; returns the existing one if there is one. */
  start(spec: RunnerSpec, signal?: AbortSignal): Promise<RunnerInstance>;
  /** Waits until the repl's runner reports SERVING on grpc.health.v1, or fails (Unavailable, DeadlineExceeded). */
  waitReady(replId: string, timeoutMs: number, signal?: AbortSignal): Promise<RunnerInstance>;
  /** The repl's runner, or undefined when none runs. */
  get(replId: string): Promise<RunnerInstance | undefined>;
  /** Every runner this driver can see, including ones started before core restarted (for the reconciler). */
  list(): Promise<RunnerInstance[]>;
  /**
   * Tears the runner down: a graceful RunnerService.Shutdown, then force after `graceMs`.
   * The caller saves the workspace first. Resolves when it is gone; no runner is fine. With
   * `runnerId`, only that runner: a different one there now (a newer start's) is left alone.
   */
  stop(replId: string, graceMs: number, options?: StopRunnerOptions): Promise<void>;
  /** Where a repl's workspace lives for this driver (local: a directory under the data directory). */
  workspacePath(replId: string): string;
  /** Removes the repl's workspace (delete). */
  removeWorkspace(replId: string): Promise<void>;
  /** Stops watching runners; with `stopRunners`, stops every runner too (local Ctrl-C). */
  close(options?: { stopRunners?: boolean }): Promise<void>;
}

/** The limits of a repl whose template sets none and whose server overrides none. */
export const defaultRunnerResources: RunnerResources = {
  memoryBytes: 1024 * 1024 * 1024,
  cpuMillicores: 1_000,
  maxProcesses: 512,
};
