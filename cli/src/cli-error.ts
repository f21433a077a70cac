/** Exit statuses: 0 ok, 1 a failure, 2 a usage error (the command line itself is wrong). */
export const ExitCode = { ok: 0, failure: 1, usage: 2 } as const;

/** An expected failure: printed as one line, without a stack trace. */
export class CliError extends Error {
  override name = "CliError";
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.failure,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The command line is wrong (a missing argument, an unknown action): exit status 2. */
export class UsageError extends CliError {
  override name = "UsageError";
  constructor(message: string) {
    super(message, ExitCode.usage);
  }
}
