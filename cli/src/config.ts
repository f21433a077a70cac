import { chmod, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { CliError } from "./cli-error.js";

/** What `devex login` saves: where core is and the API key to call it with. */
export interface StoredCredentials {
  baseUrl: string;
  apiKey: string;
}

/** The credentials a command runs with, and where each came from (for messages). */
export interface ResolvedCredentials {
  baseUrl: string;
  apiKey: string;
  source: "environment" | "config file";
}

/** Core's API URL when neither the environment nor the config file names one. */
export const defaultBaseUrl = "http://127.0.0.1:8080";

/** `$XDG_CONFIG_HOME/devex/config.json`, with `~/.config` when the variable is unset or not absolute. */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg?.startsWith("/") ? xdg : join(env.HOME || homedir(), ".config");
  return join(base, "devex", "config.json");
}

/** Reads the config file; undefined when there is none. A damaged file is an error naming the file. */
export async function readCredentials(path = configPath()): Promise<StoredCredentials | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CliError(`cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    const parsed = JSON.parse(text) as Partial<StoredCredentials>;
    if (typeof parsed.baseUrl !== "string" || typeof parsed.apiKey !== "string") throw new Error("missing fields");
    return { baseUrl: parsed.baseUrl, apiKey: parsed.apiKey };
  } catch {
    throw new CliError(`${path} is not a valid devex config file; run \`devex login\` again`);
  }
}

/**
 * Saves the credentials with mode 0600 in a 0700 directory. The file is written beside
 * its final name and renamed over it, so a reader never sees half a file and the key is
 * never readable by others, even for a moment.
 */
export async function writeCredentials(credentials: StoredCredentials, path = configPath()): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600 });
  await chmod(temporary, 0o600);
  await rename(temporary, path);
}

/** Removes the config file; false when there was none. */
export async function removeCredentials(path = configPath()): Promise<boolean> {
  try {
    await rm(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
}

/** DEVEX_BASE_URL and DEVEX_API_KEY override the config file, field by field. */
export async function resolveCredentials(env: NodeJS.ProcessEnv = process.env): Promise<ResolvedCredentials> {
  const stored = await readCredentials(configPath(env));
  const apiKey = env.DEVEX_API_KEY || stored?.apiKey;
  if (!apiKey) throw new CliError("not logged in; run `devex login --url <core url>` (or set DEVEX_API_KEY)");
  return {
    baseUrl: env.DEVEX_BASE_URL || stored?.baseUrl || defaultBaseUrl,
    apiKey,
    source: env.DEVEX_API_KEY ? "environment" : "config file",
  };
}
