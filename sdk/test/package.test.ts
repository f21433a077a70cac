import { execFile } from "node:child_process";
import { access, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LiveCore, startLiveCore } from "./support/live.js";

const exec = promisify(execFile);
const sdkDir = join(import.meta.dirname, "..");
const repoRoot = join(sdkDir, "..");
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

let live: LiveCore;
let project: string;
let tarball: string;

/** Runs a script in the consumer project with this Node, configured for the live core. */
async function runInProject(file: string, source: string, nodeArgs: string[] = []): Promise<string> {
  await writeFile(join(project, file), source);
  const { stdout } = await exec(process.execPath, [...nodeArgs, file], {
    cwd: project,
    env: { ...process.env, DEVEX_BASE_URL: live.core.url, DEVEX_API_KEY: live.apiKey },
    timeout: 30_000,
  });
  return stdout;
}

// Packs the package `npm run build` built (rebuilding it here would race the other test files that
// bundle it), and installs the tarball into an empty project, as a user would.
beforeAll(async () => {
  await access(join(sdkDir, "dist", "index.js")).catch(() => {
    throw new Error("sdk/dist is missing: run npm run build first (npm test does)");
  });
  live = await startLiveCore();
  project = await mkdtemp(join(tmpdir(), "devex-sdk-consumer-"));
  const packed = await exec(npm, ["pack", "--json", "--pack-destination", project], { cwd: sdkDir });
  const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
  tarball = join(project, info?.filename ?? "");
  await writeFile(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  await exec(npm, ["install", tarball, "--no-audit", "--no-fund", "--prefer-offline"], {
    cwd: project,
    timeout: 120_000,
  });
}, 240_000);
afterAll(async () => {
  await live?.close();
  if (project) await rm(project, { recursive: true, force: true });
});

describe("the packed package", () => {
  it("is self-contained: no private workspace dependency, no generated types in its declarations", async () => {
    const manifest = JSON.parse(
      await readFile(join(project, "node_modules", "@devex", "sdk", "package.json"), "utf8"),
    ) as { dependencies: Record<string, string> };
    expect(Object.keys(manifest.dependencies).sort()).toEqual([
      "@bufbuild/protobuf",
      "@connectrpc/connect",
      "@noble/hashes",
    ]);
    const { stdout } = await exec("tar", ["-tzf", tarball]);
    expect(stdout).toContain("package/dist/index.js");
    expect(stdout).toContain("package/dist/browser.js");
    expect(stdout).toContain("package/README.md");
    expect(stdout).not.toContain("package/src/");
    const { stdout: declarations } = await exec("sh", ["-c", "cat dist/*.d.ts"], {
      cwd: join(project, "node_modules", "@devex", "sdk"),
    });
    expect(declarations).not.toMatch(/@devex\/gen|_pb|GenMessage|devex\.runner\.v1/);
  });

  it("installs into an empty project and works there (ESM, Node)", async () => {
    const output = await runInProject(
      "list.mjs",
      `import { Devex, NotFoundError } from "@devex/sdk";
const devex = new Devex();
const templates = await devex.templates.list();
console.log(JSON.stringify(templates.map((t) => t.name)));
console.log(await devex.templates.get("nope").catch((e) => e instanceof NotFoundError));
`,
    );
    expect(output).toBe('["blank","node","python"]\ntrue\n');
  });

  it("runs the README's quick start as written", async () => {
    const readme = await readFile(join(sdkDir, "README.md"), "utf8");
    const quickStart = /## Quick start[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1] ?? "";
    expect(quickStart).toContain('from "@devex/sdk"');
    const output = await runInProject("quick-start.mjs", quickStart);
    expect(output).toMatch(/^42 0\nHello from the SDK\n\nsaved snap_[0-9a-z]{26}\n$/);
  });

  it("type-checks against its declarations", async () => {
    await writeFile(
      join(project, "check.ts"),
      `import { Devex, InvalidArgumentError, type Repl, type Template } from "@devex/sdk";
const devex = new Devex({ requestTimeoutMs: 5_000 });
const templates: Template[] = await devex.templates.list();
const repl: Repl = await devex.repls.create({ name: "x", template: templates[0]?.name ?? "blank" });
const started: Repl = await repl.start({ signal: AbortSignal.timeout(1_000) });
const result: { exitCode: number | null } = await started.commands.run(["true"], { timeoutMs: 1_000 });
const error: string | undefined = new InvalidArgumentError("bad", { field: "name" }).field;
// @ts-expect-error: the state is a string union
const state: number = repl.state;
console.log(result, error, state);
`,
    );
    await writeFile(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "es2022",
          module: "nodenext",
          moduleResolution: "nodenext",
          lib: ["es2022", "dom"],
          types: [],
          strict: true,
          noEmit: true,
        },
        files: ["check.ts"],
      }),
    );
    const tsc = join(repoRoot, "node_modules", ".bin", "tsc");
    const { stdout } = await exec(tsc, ["-p", "tsconfig.json"], { cwd: project }).catch(
      (error: { stdout: string }) => error,
    );
    expect(stdout).toBe("");
  });

  // The project has Connect 2.3.0 from the registry, which keeps every message a stream has read until the
  // stream ends; the SDK carries the Connect runtime as this repository patches it, so it does not.
  it("lets go of a download's chunks while the download runs (its own Connect, not the registry's)", async () => {
    const registryRunCall = await readFile(
      join(project, "node_modules", "@connectrpc", "connect", "dist", "esm", "protocol", "run-call.js"),
      "utf8",
    );
    expect(registryRunCall).toContain("Promise.race([it.next(), aborted])");
    const output = await runInProject(
      "download.mjs",
      `import { Devex } from "@devex/sdk";
const devex = new Devex();
const repl = await (await devex.repls.create({ name: "download", template: "blank" })).start();
await repl.commands.run("head -c 50331648 /dev/urandom > big.bin");
const read = [];
let bytes = 0;
let heldMidway = -1;
for await (const chunk of repl.fs.download("big.bin")) {
  bytes += chunk.byteLength;
  read.push(new WeakRef(chunk));
  if (heldMidway < 0 && bytes >= 40 * 1024 * 1024) {
    for (let round = 0; round < 5; round++) {
      await new Promise((resolve) => setImmediate(resolve));
      globalThis.gc();
    }
    heldMidway = read.filter((ref) => ref.deref() !== undefined).length;
  }
}
console.log(JSON.stringify({ bytes, chunks: read.length, heldMidway }));
await repl.stop();
await devex.repls.delete(repl.id);
`,
      ["--expose-gc"],
    );
    const { bytes, chunks, heldMidway } = JSON.parse(output) as { bytes: number; chunks: number; heldMidway: number };
    expect(bytes).toBe(48 * 1024 * 1024);
    expect(chunks).toBeGreaterThan(20);
    // 40 MiB in, the download still open: at most the chunk in hand and a few in flight remain.
    expect(heldMidway, `${heldMidway} of the chunks read are still held`).toBeLessThanOrEqual(4);
  });

  // Chromium is not installed on these machines: the browser entry (connect-web over fetch, the terminal's
  // StreamOutput + WriteInput form) runs in Node instead, chosen through the exports map's "browser" condition.
  it("runs its browser entry over fetch: unary calls and the browser form of the terminal", async () => {
    const output = await runInProject(
      "browser.mjs",
      `import { Devex } from "@devex/sdk";
const devex = new Devex({ baseUrl: process.env.DEVEX_BASE_URL, apiKey: process.env.DEVEX_API_KEY });
const repl = await (await devex.repls.create({ name: "browser-entry", template: "blank" })).start();
let text = "";
const terminal = await repl.terminal.create({ onData: (d) => { text += new TextDecoder().decode(d); } });
await terminal.write("echo browser-$((20 + 22))\\n");
await terminal.write("exit 4\\n");
const exit = await terminal.wait();
await repl.fs.write("b.txt", "from the browser entry");
console.log(import.meta.resolve("@devex/sdk").endsWith("/dist/browser.js"));
console.log(text.includes("browser-42"), exit.exitCode, await repl.fs.readText("b.txt"));
await repl.stop();
await devex.repls.delete(repl.id);
`,
      ["--conditions=browser"],
    );
    expect(output).toBe("true\ntrue 4 from the browser entry\n");
  });
});
