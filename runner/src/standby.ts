import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { createValidateInterceptor } from "@connectrpc/validate";
import { type AttachRequest, AttachRequestSchema, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { createLoggingInterceptor, runnerTokenAlgorithm, signRunnerToken } from "@devex/kit";
import { exportSPKI, generateKeyPair, importSPKI } from "jose";
import type { Logger } from "pino";
import { Channel } from "./channel.js";
import { type RunnerConfig, runnerSettings } from "./config.js";
import { createRunner } from "./runner.js";

/** The repl a standby runner serves once assigned: one JSON line on its stdin. */
export interface StandbyAssignment {
  replId: string;
  workspace: string;
  home?: string;
}

/** How waiting for an assignment ended. */
export type StandbyOutcome =
  /** Assigned: the configuration of a normal start for the assigned repl. */
  | { kind: "assigned"; config: RunnerConfig }
  /** Stdin ended first: whoever would assign it (core) is gone. */
  | { kind: "orphaned" }
  /** The assignment line is not one: `reason` says why. */
  | { kind: "invalid"; reason: string };

/** How many times the warm-up serves its request. */
const warmUpRounds = 2;
/** A repl id of the right shape that core never issues (ids are random), for the warm-up. */
const warmUpReplId = `repl_${"0".repeat(26)}`;

/** An assignment line that is not one. */
export class AssignmentError extends Error {
  override readonly name = "AssignmentError";
}

/**
 * Reads an assignment line, with the rules of the flags it stands for (`--repl-id`,
 * `--workspace`, `--home`): a repl id, a non-empty workspace path and, if given, a
 * non-empty home. Throws an {@link AssignmentError} saying what is wrong otherwise.
 */
export function parseAssignment(line: string): StandbyAssignment {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new AssignmentError("not JSON");
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) throw new AssignmentError("not a JSON object");
  const fields = value as Record<string, unknown>;
  const problems: string[] = [];
  const check = (key: "replId" | "workspace" | "home", required: boolean): string | undefined => {
    const raw = fields[key];
    if (raw === undefined) {
      if (required) problems.push(`${key} is missing`);
      return undefined;
    }
    const parsed = typeof raw === "string" ? runnerSettings[key].schema.safeParse(raw) : undefined;
    if (parsed?.success && typeof parsed.data === "string") return parsed.data;
    const why = parsed?.error?.issues.map((issue) => issue.message).join("; ") ?? "must be a string";
    problems.push(`${key} ${why} (got ${JSON.stringify(raw)})`);
    return undefined;
  };
  const replId = check("replId", true);
  const workspace = check("workspace", true);
  const home = check("home", false);
  const unknown = Object.keys(fields).filter((key) => !["replId", "workspace", "home"].includes(key));
  if (unknown.length > 0) problems.push(`unknown fields ${unknown.join(", ")}`);
  if (problems.length > 0 || !replId || !workspace) throw new AssignmentError(problems.join("; "));
  return home === undefined ? { replId, workspace } : { replId, workspace, home };
}

/**
 * Runs a standby runner up to its assignment: warms up what a repl's first requests need
 * (see {@link warmUp}), logs `standby`, and waits for one assignment line on `input`.
 * Stdin ending first means core is gone: the outcome is then `orphaned` at once, even in
 * the middle of the warm-up. An assignment that arrives early waits for the warm-up.
 */
export async function awaitAssignment(
  config: RunnerConfig,
  logger: Logger,
  input: Readable = process.stdin,
): Promise<StandbyOutcome> {
  const line = readOneLine(input);
  const warm = (async () => {
    await warmUp(config, logger);
    logger.info("standby");
  })();
  // The line, or the warm-up's failure (core's key does not import) if that comes first.
  const first = await Promise.race([line, warm.then(() => line)]);
  if (first === undefined) return { kind: "orphaned" };
  let assignment: StandbyAssignment;
  try {
    assignment = parseAssignment(first);
  } catch (error) {
    if (!(error instanceof AssignmentError)) throw error;
    return { kind: "invalid", reason: error.message };
  }
  await warm;
  return {
    kind: "assigned",
    config: { ...config, ...assignment, home: assignment.home ?? config.home, standby: false },
  };
}

/**
 * Does once, before any repl is known, what makes a fresh runner's first requests slow:
 * imports core's public key (a bad key fails here, not at assignment), then serves an
 * Attach in process (no port) to a throwaway runner with a throwaway key, running `true`
 * in a terminal. That loads the terminal emulator, spawns and reaps a pty through node-pty,
 * verifies an EdDSA token through the same jose path, compiles the request validator's
 * rules, and runs the terminal service's code. Only the key import may fail the standby;
 * the rest is an optimization, so its failure is logged and ignored.
 *
 * The throwaway runner's workspace and home are the system's temporary directory: `true`
 * writes nothing there, so a standby killed in the middle of its warm-up leaves nothing behind.
 */
export async function warmUp(config: RunnerConfig, logger: Logger): Promise<void> {
  const began = performance.now();
  const pem = config.tokenPublicKey ?? "";
  await importSPKI(pem.startsWith("-----BEGIN") ? pem : await readFile(pem, "utf8"), runnerTokenAlgorithm);
  try {
    const keys = await generateKeyPair(runnerTokenAlgorithm, { crv: "Ed25519" });
    const silent = logger.child({ warmUp: true }, { level: "silent" });
    const runner = await createRunner(
      {
        ...config,
        standby: false,
        dev: false,
        replId: warmUpReplId,
        workspace: tmpdir(),
        home: tmpdir(),
        tokenPublicKey: await exportSPKI(keys.publicKey),
      },
      silent,
    );
    const token = await signRunnerToken(keys.privateKey, {
      replId: warmUpReplId,
      userId: "usr_standby",
      role: "user",
      ttlMs: 60_000,
    });
    // JIT compilers optimize code that ran a few times: after one round the first real
    // request is still noticeably slower than the second. Each round has a fresh validator,
    // as the real server will: it compiles its rules per validator.
    for (let round = 0; round < warmUpRounds; round++) {
      const terminal = createClient(
        TerminalService,
        createRouterTransport(runner.routes, {
          router: {
            interceptors: [createLoggingInterceptor(silent), ...runner.interceptors, createValidateInterceptor()],
          },
        }),
      );
      const requests = new Channel<AttachRequest>();
      requests.push(
        create(AttachRequestSchema, {
          kind: {
            case: "open",
            value: { target: { case: "create", value: { command: ["true"], cols: 80, rows: 24 } } },
          },
        }),
      );
      try {
        for await (const res of terminal.attach(requests, { headers: { authorization: `Bearer ${token}` } })) {
          if (res.event.case === "exit") break;
        }
      } finally {
        requests.close();
      }
    }
    await runner.shutdown(0, "warm-up over");
    logger.debug({ durationMs: Math.round(performance.now() - began) }, "warmed up");
  } catch (error) {
    logger.warn({ err: error }, "standby warm-up failed; the first requests will be slower");
  }
}

/**
 * The first line of `input`, or undefined if it ends first. Reading stops after that line
 * (closing the interface pauses the input); the input stays open, so its file descriptor
 * (stdin's 0) is not handed to the next file the runner opens.
 */
function readOneLine(input: Readable): Promise<string | undefined> {
  return new Promise((resolve) => {
    const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
    lines.once("line", (line) => {
      resolve(line);
      lines.close();
    });
    lines.once("close", () => resolve(undefined));
  });
}
