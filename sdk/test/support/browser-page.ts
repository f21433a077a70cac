/**
 * The script of the page `browser.test.ts` opens in Chromium: bundled for the browser, it imports the SDK's
 * browser entry (the package's `browser` export), drives a repl through it and leaves what it saw in
 * `globalThis.__devexResult`. Core's URL and the API key come in the URL fragment.
 */
import { Devex } from "@devex/sdk";

/** What the page reports back to the test. */
export interface BrowserPageResult {
  ok: boolean;
  error?: string;
  templates?: string[];
  startedState?: string;
  fileText?: string;
  terminalOutput?: string;
  stoppedState?: string;
  deleted?: boolean;
}

const page = globalThis as unknown as { location: { hash: string }; __devexResult?: BrowserPageResult };

async function run(): Promise<BrowserPageResult> {
  const params = new URLSearchParams(page.location.hash.slice(1));
  const devex = new Devex({ apiKey: params.get("apiKey") ?? "", baseUrl: params.get("baseUrl") ?? "" });
  const templates = (await devex.templates.list()).map((t) => t.name);
  const created = await devex.repls.create({ name: params.get("replName") ?? "browser", template: "blank" });
  const repl = await created.start();
  await repl.fs.write("from-browser.txt", "written in Chromium");
  const fileText = await repl.fs.readText("from-browser.txt");

  let terminalOutput = "";
  const echoed = Promise.withResolvers<void>();
  const decoder = new TextDecoder();
  const terminal = await repl.terminal.create({
    command: ["sh"],
    onData: (data) => {
      terminalOutput += decoder.decode(data, { stream: true });
      if (terminalOutput.includes("browser-42")) echoed.resolve();
    },
  });
  await terminal.write("echo browser-$((6*7))\n");
  await echoed.promise;
  await terminal.kill();

  const { repl: stopped } = await repl.stop();
  await devex.repls.delete(repl.id);
  const deleted = !(await devex.repls.list()).some((r) => r.id === repl.id);
  return {
    ok: true,
    templates,
    startedState: repl.state,
    fileText,
    terminalOutput,
    stoppedState: stopped.state,
    deleted,
  };
}

run().then(
  (result) => {
    page.__devexResult = result;
  },
  (error: unknown) => {
    page.__devexResult = {
      ok: false,
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
    };
  },
);
