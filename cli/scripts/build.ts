/**
 * `npm run build -w cli`: bundles the command line with the SDK and its dependencies into
 * one ES module, `cli/dist/devex.js` (the package's bin), so `devex` starts on plain Node
 * without a TypeScript loader. Tests build it too and run that same file.
 */

import { chmod, mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { build } from "esbuild";

const cliRoot = join(import.meta.dirname, "..");

/** Where the bundle goes: the file the package's `bin` names. */
export const cliBundle = join(cliRoot, "dist", "devex.js");

/**
 * Builds the bundle. It is written beside its final name and renamed, so a build running
 * alongside (two test files at once) never leaves a half-written file to run.
 */
export async function buildCli(): Promise<string> {
  const result = await build({
    entryPoints: [join(cliRoot, "src", "main.ts")],
    bundle: true,
    platform: "node",
    target: "node22",
    format: "esm",
    write: false,
    // Bundled CommonJS dependencies still call require().
    banner: {
      js: "import { createRequire as __devexRequire } from 'node:module'; const require = __devexRequire(import.meta.url);",
    },
    logLevel: "silent",
  }).catch((error: { errors?: { text: string }[] }) => {
    const sdkMissing = error.errors?.some((e) => e.text.includes("@devex/sdk"));
    throw new Error(sdkMissing ? "cannot bundle @devex/sdk: build it first (npm run build -w sdk)" : String(error), {
      cause: error,
    });
  });
  const code = result.outputFiles[0]?.contents;
  if (!code) throw new Error("esbuild produced no output");
  await mkdir(join(cliRoot, "dist"), { recursive: true });
  const temporary = `${cliBundle}.${process.pid}.tmp`;
  await writeFile(temporary, code);
  await chmod(temporary, 0o755);
  await rename(temporary, cliBundle);
  return cliBundle;
}

if (process.argv[1] === import.meta.filename) await buildCli();
