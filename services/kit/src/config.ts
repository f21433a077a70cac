import { parseArgs } from "node:util";
import { z } from "zod";

/** One configuration setting: where it is read from and what values it accepts. */
export interface Setting<T extends z.ZodType = z.ZodType> {
  /** The command-line flag, without the leading dashes (`port` for `--port`). */
  flag: string;
  /** The environment variable read when the flag is absent. */
  env: string;
  /** Validates and converts the raw string; its default applies when neither is given. */
  schema: T;
  /** One line for `--help`. */
  description: string;
  /** A flag that takes no value (`--dev`); the environment still takes `true`/`false`. */
  boolean?: boolean;
}

/** A set of settings, keyed by the property name they get in the loaded configuration. */
export type Settings = Record<string, Setting>;

/** The typed configuration described by a set of settings. */
export type ConfigOf<S extends Settings> = { [K in keyof S]: z.output<S[K]["schema"]> };

/** Where configuration is read from; defaults to this process. */
export interface LoadConfigOptions {
  argv?: readonly string[];
  env?: Readonly<Record<string, string | undefined>>;
}

/** A configuration that failed validation; the message names every bad value and where it came from. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  /** Whether the user asked for `--help` rather than making a mistake. */
  readonly help: boolean;
  constructor(message: string, help = false) {
    super(message);
    this.help = help;
  }
}

/** Declares a setting with its type inferred from the schema. */
export function setting<T extends z.ZodType>(value: Setting<T>): Setting<T> {
  return value;
}

/** A TCP port: 0 (any free port) to 65535. */
export const portSchema = z.coerce
  .number({ error: "must be a number" })
  .int("must be a whole number")
  .min(0, "must be between 0 and 65535")
  .max(65535, "must be between 0 and 65535");

/** A boolean read from `true`/`false`/`1`/`0`/`yes`/`no`. */
export const booleanSchema = z.stringbool({ error: "must be true or false" });

/** A positive duration in milliseconds. */
export function durationMsSchema(min: number, max: number): z.ZodType<number> {
  return z.coerce
    .number({ error: "must be a number of milliseconds" })
    .int("must be a whole number of milliseconds")
    .min(min, `must be at least ${min} ms`)
    .max(max, `must be at most ${max} ms`);
}

/** A size in bytes within bounds. */
export function bytesSchema(min: number, max: number): z.ZodType<number> {
  return z.coerce
    .number({ error: "must be a number of bytes" })
    .int("must be a whole number of bytes")
    .min(min, `must be at least ${min} bytes`)
    .max(max, `must be at most ${max} bytes`);
}

/** The `--help` text for a set of settings. */
export function usage(command: string, settings: Settings): string {
  const lines = [`Usage: ${command} [options]`, "", "Options (flag, environment variable):"];
  for (const s of Object.values(settings)) {
    const flag = s.boolean ? `--${s.flag}` : `--${s.flag} <value>`;
    lines.push(`  ${flag.padEnd(28)} ${s.env.padEnd(30)} ${s.description}`);
  }
  lines.push(`  ${"--help".padEnd(28)} ${"".padEnd(30)} Print this help.`);
  return lines.join("\n");
}

/**
 * Reads settings from flags, then the environment, then their defaults, and validates
 * every value. Throws a {@link ConfigError} listing each bad value with its source.
 */
export function loadConfig<S extends Settings>(settings: S, options: LoadConfigOptions = {}): ConfigOf<S> {
  const argv = options.argv ?? process.argv.slice(2);
  const env = options.env ?? process.env;
  const parseOptions: Record<string, { type: "string" | "boolean" }> = { help: { type: "boolean" } };
  for (const s of Object.values(settings)) parseOptions[s.flag] = { type: s.boolean ? "boolean" : "string" };

  let flags: Record<string, string | boolean | undefined>;
  try {
    flags = parseArgs({ args: [...argv], options: parseOptions, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new ConfigError(`invalid command line: ${(error as Error).message}`);
  }
  if (flags.help) throw new ConfigError("help requested", true);

  const result: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, s] of Object.entries(settings)) {
    const fromFlag = flags[s.flag];
    const fromEnv = env[s.env];
    const raw =
      fromFlag !== undefined ? String(fromFlag) : fromEnv !== undefined && fromEnv !== "" ? fromEnv : undefined;
    const source = fromFlag !== undefined ? `--${s.flag}` : fromEnv ? `${s.env}` : "default";
    const parsed = s.schema.safeParse(raw);
    if (parsed.success) {
      result[key] = parsed.data;
    } else {
      const why = parsed.error.issues.map((issue) => issue.message).join("; ");
      const got = raw === undefined ? "nothing" : JSON.stringify(raw);
      problems.push(`  --${s.flag} (${s.env}), from ${source}: ${why} (got ${got})`);
    }
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration:\n${problems.join("\n")}`);
  return result as ConfigOf<S>;
}
