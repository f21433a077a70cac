import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { create } from "@bufbuild/protobuf";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { createValidateInterceptor } from "@connectrpc/validate";
import { type AttachRequest, AttachRequestSchema, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { createLoggingInterceptor, runnerTokenAlgorithm, signRunnerToken } from "@devex/kit";
import { exportSPKI, generateKeyPair, importSPKI } from "jose";
import type { Logger } from "pino";
import { Channel } from "./channel.js";
import type { RunnerConfig } from "./config.js";
import { createRunner } from "./runner.js";

/** How many times the warm-up serves its request. */
const warmUpRounds = 2;
/** A repl id of the right shape that core never issues (ids are random), for the warm-up. */
const warmUpReplId = `repl_${"0".repeat(26)}`;

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
