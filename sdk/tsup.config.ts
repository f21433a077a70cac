import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { defineConfig } from "tsup";

// An install that skipped the patch (npm ci --ignore-scripts) must not ship the unpatched runtime.
const connectDist = createRequire(import.meta.url)
  .resolve("@connectrpc/connect/protocol")
  .replace(/cjs\/protocol\/index\.js$/, "");
for (const build of ["esm", "cjs"]) {
  const runCall = `${connectDist}${build}/protocol/run-call.js`;
  if (!readFileSync(runCall, "utf8").includes("readUnlessAborted")) {
    throw new Error(
      `${runCall} is not patched: run npm install (patch-package applies patches/) before building the SDK`,
    );
  }
}

// Two ESM entries (Node and browser) sharing chunks. The private generated code (@devex/gen, and the
// protovalidate descriptors it imports) is bundled in. So is the Connect runtime, as this repository
// patches it (patches/@connectrpc+connect+2.3.0.patch): Connect 2.3.0 from the registry keeps every
// message a stream has read until the stream ends, which would hold a whole download, or all of a
// terminal's output, in memory. (Its ConnectError recognises errors of other copies of Connect.) The
// Protobuf runtime stays a dependency, and so does @connectrpc/connect for the types the declarations
// name (ConnectError, Interceptor, Code). The declarations expose only the SDK's own types:
// constructors marked @internal are stripped.
export default defineConfig({
  entry: { index: "src/index.ts", browser: "src/browser.ts" },
  format: ["esm"],
  target: "es2022",
  platform: "neutral",
  splitting: true,
  sourcemap: true,
  clean: true,
  treeshake: true,
  noExternal: [/^@devex\/gen\//, /^@bufbuild\/protovalidate\//, /^@connectrpc\//],
  external: [/^@bufbuild\/protobuf/, /^node:/],
  removeNodeProtocol: false,
  tsconfig: "tsconfig.build.json",
  dts: { compilerOptions: { stripInternal: true } },
});
