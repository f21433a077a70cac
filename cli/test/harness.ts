import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CoreProcess, startCoreProcess } from "../../services/core/test/support/core-process.js";
import { buildCli } from "../scripts/build.js";

/** A real core (from `npm run build`), the built `devex` bundle and a home directory of its own. */
export interface CliHarness {
  core: CoreProcess;
  /** The dev admin's API key. */
  apiKey: string;
  /** The bundle the package's bin points at. */
  bundle: string;
  /** HOME and XDG_CONFIG_HOME of every `devex` run. */
  home: string;
  /** The environment `devex` runs with (no DEVEX_* variables from the test's own environment). */
  env: NodeJS.ProcessEnv;
  /** Runs `devex` and resolves when it exits. */
  devex(args: string[], options?: RunOptions): Promise<RunResult>;
  /** Runs `devex login` with the dev key, so later commands are authenticated. */
  login(): Promise<void>;
  close(): Promise<void>;
}

/** Options of `CliHarness.devex`. */
export interface RunOptions {
  /** Written to standard input, which is then closed (closed at once when absent). */
  input?: string;
  /** Added to the environment. */
  env?: NodeJS.ProcessEnv;
}

/** What a `devex` run printed and how it exited. */
export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Starts core (with `coreArgs`), builds the CLI and makes a fresh home directory. */
export async function startCliHarness(coreArgs: string[] = []): Promise<CliHarness> {
  const [core, bundle, home] = await Promise.all([
    startCoreProcess(coreArgs),
    buildCli(),
    mkdtemp(join(tmpdir(), "devex-cli-home-")),
  ]);
  const apiKey = await core.devApiKey();
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: join(home, ".config") };
  const harness: CliHarness = {
    core,
    apiKey,
    bundle,
    home,
    env,
    devex(args, options = {}) {
      return runNode([bundle, ...args], { ...env, ...options.env }, options.input);
    },
    async login() {
      const result = await harness.devex(["login", "--url", core.url, "--api-key", apiKey]);
      if (result.status !== 0) throw new Error(`devex login failed: ${result.stderr}`);
    },
    async close() {
      await core.stop();
      await core.cleanup();
      await rm(home, { recursive: true, force: true });
    },
  };
  return harness;
}

function runNode(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env, stdio: ["pipe", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    child.once("error", reject);
    child.once("close", (status) =>
      resolve({ status, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() }),
    );
    child.stdin.end(input ?? "");
  });
}
