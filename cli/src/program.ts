import { Command, CommanderError, Option } from "commander";
import { ExitCode, UsageError } from "./cli-error.js";
import { login, logout } from "./commands/auth.js";
import { copy } from "./commands/cp.js";
import { execCommand } from "./commands/exec.js";
import { openPreview, ports } from "./commands/ports.js";
import { createRepl, listRepls, removeRepls, startRepl, stopRepl, updateRepl } from "./commands/repls.js";
import { shell } from "./commands/shell.js";
import { snapshots } from "./commands/snapshots.js";
import { listTemplates } from "./commands/templates.js";
import { type CommandContext, createCommandContext } from "./context.js";
import { describeError } from "./describe-error.js";

/** The process's streams and environment, passed in so the CLI can be run in a test. */
export interface CliIo {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}

/** The version `devex --version` prints. */
export const cliVersion = "0.1.0";

/** A command: resolves with its exit status, or with nothing for 0. */
type Handler = (ctx: CommandContext, ...args: never[]) => Promise<unknown>;

/**
 * Runs `devex` with `argv` (without the node and script paths) and resolves with the exit
 * status: 0 ok, 1 a failure, 2 a usage error, or the remote status for `exec` and `shell`.
 * Expected failures are one line on stderr; a stack trace only with DEVEX_DEBUG=1.
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let context: CommandContext | undefined;
  let status: number = ExitCode.ok;
  const act =
    (handler: Handler) =>
    async (...args: unknown[]): Promise<void> => {
      const command = args.at(-1) as Command;
      context = createCommandContext({
        output: { json: Boolean(command.optsWithGlobals().json), stdout: io.stdout, stderr: io.stderr },
        stdin: io.stdin,
        env: io.env,
      });
      const result = await handler(context, ...(args.slice(0, -1) as never[]));
      status = typeof result === "number" ? result : ExitCode.ok;
    };

  const program = createProgram(act, io);
  try {
    await program.parseAsync(argv, { from: "user" });
    return status;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and --version end with exitCode 0; commander already printed any message.
      return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    const report = describeError(error, { baseUrl: context?.baseUrl });
    io.stderr.write(`devex: ${report.message}\n`);
    if (io.env.DEVEX_DEBUG === "1" && error instanceof Error) io.stderr.write(`${error.stack}\n`);
    else if (report.unexpected) io.stderr.write("devex: (set DEVEX_DEBUG=1 for details)\n");
    return report.exitCode;
  }
}

function createProgram(act: (handler: Handler) => (...args: unknown[]) => Promise<void>, io: CliIo): Command {
  const program = new Command("devex")
    .description("Work with Devex repls: cloud development sandboxes.")
    .version(cliVersion)
    .option("--json", "print results as JSON (for scripts)")
    .exitOverride()
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
      outputError: (text, write) => write(`devex: ${text.replace(/^error: /, "")}`),
    })
    .addHelpText(
      "after",
      `
Repls are named by id (repl_...) or by name everywhere.
Credentials: $XDG_CONFIG_HOME/devex/config.json (see \`devex login\`); DEVEX_BASE_URL and
DEVEX_API_KEY override it. DEVEX_DEBUG=1 prints stack traces.
Exit status: 0 ok, 1 failure, 2 usage error; exec and shell exit with the remote status.
`,
    );

  program
    .command("login")
    .description("check an API key against core and save it (mode 0600)")
    .option("--url <url>", "core's API URL (default: DEVEX_BASE_URL, the saved URL or http://127.0.0.1:8080)")
    .option("--api-key <key>", "the API key (default: standard input when it is not a terminal, else a prompt)")
    .action(act(login));

  program.command("logout").description("forget the saved credentials").action(act(logout));

  program
    .command("templates")
    .description("list the templates repls are created from")
    .option("--tag <tag>", "only templates with this tag")
    .action(act(listTemplates));

  program
    .command("ls")
    .alias("list")
    .description("list your repls")
    .addOption(new Option("--state <state...>", "only repls in these states"))
    .action(act(listRepls));

  program
    .command("create")
    .description("create a repl from a template")
    .argument("<name>", "the new repl's name")
    .requiredOption("-t, --template <template>", "the template to start from (see `devex templates`)")
    .option("--start", "start it once created")
    .option("--idle-timeout <seconds>", "stop it after this many seconds without activity; never: keep it awake")
    .option("--label <key=value...>", "labels to attach")
    .action(act(createRepl));

  program
    .command("update")
    .description("change a repl's idle policy (also while it runs)")
    .argument("<repl>", "id or name")
    .requiredOption(
      "--idle-timeout <seconds>",
      "stop it after this many seconds without activity (60 to 86400); default: the server's; never: keep it awake",
    )
    .addHelpText(
      "after",
      `
Activity: attached terminals and commands, their input and output, file changes, a command still
running, and a terminal whose shell runs a command in the foreground (a shell at its prompt is idle).
Examples:
  devex update myrepl --idle-timeout never     # a long quiet job: never stop it for being idle
  devex update myrepl --idle-timeout 3600
  devex update myrepl --idle-timeout default
`,
    )
    .action(act(updateRepl));

  program
    .command("start")
    .description("start a repl and wait until it runs")
    .argument("<repl>", "id or name")
    .action(act(startRepl));

  program
    .command("stop")
    .description("save a repl's workspace as a snapshot and stop it")
    .argument("<repl>", "id or name")
    .action(act(stopRepl));

  program
    .command("rm")
    .alias("delete")
    .description("delete repls with their workspaces and snapshots")
    .argument("<repl...>", "ids or names")
    .option("-f, --force", "no error for repls that do not exist")
    .action(act(removeRepls));

  program
    .command("shell")
    .description("open an interactive terminal in a repl (Ctrl-] detaches)")
    .argument("<repl>", "id or name")
    .option("--session <id>", "reattach to this terminal session, replaying its screen")
    .addHelpText(
      "after",
      "\nThe repl is started if needed. Ctrl-] leaves the session running; reattach with --session <id>.\n",
    )
    .action(act(shell));

  program
    .command("exec")
    .description("run a command in a repl; exits with the command's status")
    .argument("<repl>", "id or name")
    .argument("<command...>", "the program and its arguments after --, or one shell command line")
    .option("-i, --interactive", "pass standard input to the command")
    .option("-w, --cwd <dir>", "working directory inside the repl")
    .option("-e, --env <name=value...>", "environment variables")
    .option("--timeout <seconds>", "kill the command after this many seconds", parsePositiveNumber("--timeout"))
    .addHelpText(
      "after",
      "\nExamples:\n  devex exec myrepl -- ls -l src\n  devex exec myrepl 'ls | wc -l'\nA command killed by signal n gives status 128+n.\n",
    )
    .action(act(execCommand));

  program
    .command("cp")
    .description("copy files between the local disk and a repl, with a progress bar on a terminal")
    .argument("<from>", "a local path or repl:/path")
    .argument("<to>", "a local path or repl:/path")
    .option("-r, --recursive", "copy directories")
    .addHelpText(
      "after",
      "\nExamples:\n  devex cp ./app.js myrepl:/app.js\n  devex cp -r myrepl:/src ./src\nRepl paths are relative to the workspace root.\n",
    )
    .action(act(copy));

  program
    .command("open")
    .description("print the URL at which a browser opens a repl's web app (a private port's URL signs you in)")
    .argument("<repl>", "id or name")
    .argument("[port]", "the app's port inside the repl (default: the repl's first port)")
    .action(act(openPreview));

  program
    .command("ports")
    .description("list a repl's web ports, or make one public or private")
    .argument("<repl>", "id or name")
    .argument("[port]", "the port to change")
    .option("--public", "anyone with the preview URL may open it")
    .option("--private", "only you may open it (the default)")
    .addHelpText("after", "\nExamples:\n  devex ports myrepl\n  devex ports myrepl 3000 --public\n")
    .action(act(ports));

  program
    .command("snapshots")
    .description("list, create or restore a repl's snapshots")
    .argument("<repl>", "id or name")
    .argument("[action]", "list (default), create or restore")
    .argument("[snapshot]", "the snapshot id, for restore")
    .option("-m, --message <description>", "a description, for create")
    .addHelpText(
      "after",
      "\nExamples:\n  devex snapshots myrepl\n  devex snapshots myrepl create -m 'before upgrade'\n  devex snapshots myrepl restore snap_...\n",
    )
    .action(act(snapshots));

  return program;
}

function parsePositiveNumber(flag: string): (value: string) => string {
  return (value) => {
    if (!(Number(value) > 0)) throw new UsageError(`${flag}: "${value}" is not a positive number`);
    return value;
  };
}
