import { AuthenticationError, Devex } from "@devex/sdk";
import { CliError, UsageError } from "../cli-error.js";
import { configPath, defaultBaseUrl, readCredentials, removeCredentials, writeCredentials } from "../config.js";
import type { CommandContext } from "../context.js";
import { printJson, printNotice } from "../output.js";
import { promptSecret, readAll } from "../prompt.js";

/** Options of `devex login`. */
export interface LoginOptions {
  url?: string;
  apiKey?: string;
}

/**
 * `devex login`: takes the key from `--api-key`, else from standard input when it is not
 * a terminal, else from a prompt without echo; checks it against core; then saves it.
 */
export async function login(ctx: CommandContext, options: LoginOptions): Promise<void> {
  const path = configPath(ctx.env);
  const stored = await readCredentials(path);
  const baseUrl = normalizeUrl(options.url ?? ctx.env.DEVEX_BASE_URL ?? stored?.baseUrl ?? defaultBaseUrl);
  const apiKey = (await readApiKey(ctx, options)).trim();
  if (!apiKey) throw new UsageError("no API key given (use --api-key, standard input or the prompt)");

  try {
    await new Devex({ baseUrl, apiKey }).templates.list();
  } catch (error) {
    if (error instanceof AuthenticationError) {
      throw new CliError(`the API key was refused by ${baseUrl}; nothing was saved`, 1, { cause: error });
    }
    throw error;
  }
  await writeCredentials({ baseUrl, apiKey }, path);
  if (ctx.output.json) printJson(ctx.output, { baseUrl, configPath: path });
  else printNotice(ctx.output, `Logged in to ${baseUrl}; credentials saved in ${path}`);
}

/** `devex logout`: forgets the saved credentials. */
export async function logout(ctx: CommandContext): Promise<void> {
  const path = configPath(ctx.env);
  const removed = await removeCredentials(path);
  if (ctx.output.json) printJson(ctx.output, { loggedOut: removed, configPath: path });
  else printNotice(ctx.output, removed ? `Logged out; removed ${path}` : "Not logged in; nothing to do");
}

async function readApiKey(ctx: CommandContext, options: LoginOptions): Promise<string> {
  if (options.apiKey !== undefined) return options.apiKey;
  if (!ctx.stdin.isTTY) return readAll(ctx.stdin);
  return promptSecret("API key: ", ctx.stdin, ctx.output.stderr);
}

function normalizeUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--url: "${url}" is not a URL (expected for example http://127.0.0.1:8080)`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new UsageError(`--url: "${url}" must start with http:// or https://`);
  }
  return url.replace(/\/+$/, "");
}
