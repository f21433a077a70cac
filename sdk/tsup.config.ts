import { defineConfig } from "tsup";

// Two ESM entries (Node and browser) sharing chunks. The private generated code (@devex/gen, and the
// protovalidate descriptors it imports) is bundled in; the Connect and Protobuf runtimes stay dependencies.
// The declarations expose only the SDK's own types: constructors marked @internal are stripped.
export default defineConfig({
  entry: { index: "src/index.ts", browser: "src/browser.ts" },
  format: ["esm"],
  target: "es2022",
  platform: "neutral",
  splitting: true,
  sourcemap: true,
  clean: true,
  treeshake: true,
  noExternal: [/^@devex\/gen\//, /^@bufbuild\/protovalidate\//],
  external: [/^@bufbuild\/protobuf/, /^@connectrpc\//],
  tsconfig: "tsconfig.build.json",
  dts: { compilerOptions: { stripInternal: true } },
});
