import { parseArgs } from "node:util";
import * as z from "zod/mini";

/** One configuration setting: where it is read from and what values it accepts. */
export interface Setting<T extends z.ZodMiniType = z.ZodMiniType> {
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
export function setting<T extends z.ZodMiniType>(value: Setting<T>): Setting<T> {
  return value;
}

// Schemas for settings. Configuration uses zod's small build ("zod/mini"): the full one
// costs every process about 10 MB of memory for a few checks at start-up.

/** A whole number within bounds, `unit` naming what it counts in messages. */
export function integerSchema(min: number, max: number, unit = ""): z.ZodMiniType<number> {
  const of = unit ? ` ${unit}` : "";
  return z.coerce
    .number({ error: `must be a number${of ? ` of${of}` : ""}` })
    .check(
      z.int(`must be a whole number${of ? ` of${of}` : ""}`),
      z.minimum(min, `must be at least ${min}${of}`),
      z.maximum(max, `must be at most ${max}${of}`),
    );
}

/** A TCP port: 0 (any free port) to 65535. */
export const portSchema = z.coerce
  .number({ error: "must be a number" })
  .check(
    z.int("must be a whole number"),
    z.minimum(0, "must be between 0 and 65535"),
    z.maximum(65535, "must be between 0 and 65535"),
  );

/** A boolean read from `true`/`false`/`1`/`0`/`yes`/`no` (or a flag given without a value). */
export const booleanSchema = z.union([z.boolean(), z.stringbool({ error: "must be true or false" })]);

/** A duration in milliseconds within bounds. */
export function durationMsSchema(min: number, max: number): z.ZodMiniType<number> {
  return integerSchema(min, max, "ms");
}

/** A size in bytes within bounds. */
export function bytesSchema(min: number, max: number): z.ZodMiniType<number> {
  return integerSchema(min, max, "bytes");
}

/** A non-empty string. */
export const textSchema = z.string().check(z.minLength(1, "must not be empty"));

/** A string matching a pattern; `message` says what is expected. */
export function patternSchema(pattern: RegExp, message: string): z.ZodMiniType<string> {
  return z.string().check(z.regex(pattern, message));
}

/** The schema with a default for when the setting is not given. */
export function withDefault<T extends z.ZodMiniType>(schema: T, value: z.output<T>) {
  return z._default(schema, value as never);
}

/** The schema, or undefined when the setting is not given. */
export function optional<T extends z.ZodMiniType>(schema: T) {
  return z.optional(schema);
}

/** One of a fixed set of strings. */
export function oneOfSchema<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: `must be one of ${values.join(", ")}` });
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
