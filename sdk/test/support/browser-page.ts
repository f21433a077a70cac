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
  /** A 9 MiB upload (parts, then a move) read back: its size, whether the bytes match, the progress reports. */
  upload?: { sizeBytes: number; identical: boolean; progressReports: number; leftovers: string[] };
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

  // More than one request body can carry: the SDK sends it in parts and moves it into place.
  const big = new Uint8Array(9 * 1024 * 1024 + 7);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 12)) & 0xff;
  let progressReports = 0;
  const uploaded = await repl.fs.upload("uploads/big.bin", big, {
    createParents: true,
    onProgress: () => progressReports++,
  });
  let identical = true;
  let at = 0;
  for await (const chunk of repl.fs.download("uploads/big.bin")) {
    for (let i = 0; i < chunk.length; i++) if (chunk[i] !== big[at + i]) identical = false;
    at += chunk.length;
  }
  identical &&= at === big.length;
  const leftovers = (await repl.fs.list("uploads", { includeHidden: true }))
    .map((entry) => entry.name)
    .filter((name) => name !== "big.bin");

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
    upload: { sizeBytes: uploaded.sizeBytes, identical, progressReports, leftovers },
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
