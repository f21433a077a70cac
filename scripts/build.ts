/**
 * `npm run build`: bundles each service's entry point into one ES module file
 * (`<service>/dist/main.js`) with esbuild, so services start fast and small on plain
 * Node: no TypeScript loader at run time. node-pty stays external (a native addon). Then
 * builds the SDK package (`sdk/dist`, what `npm pack` ships) and the `devex` command line,
 * which bundles it.
 */

import { execFileSync } from "node:child_process";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const root = join(import.meta.dirname, "..");
const entries = [
  { in: "runner/src/main.ts", out: "runner/dist/main.js" },
  { in: "services/core/src/main.ts", out: "services/core/dist/main.js" },
  { in: "services/core/src/sync-templates.ts", out: "services/core/dist/sync-templates.js" },
];

for (const entry of entries) {
  await build({
    entryPoints: [join(root, entry.in)],
    outfile: join(root, entry.out),
    bundle: true,
    platform: "node",
    target: "node24",
    format: "esm",
    sourcemap: "linked",
    // Native addons, and modules loaded on demand (the terminal emulator), stay outside.
    external: ["node-pty", "@xterm/headless"],
    // Bundled CommonJS dependencies still call require().
    banner: {
      js: "import { createRequire as __devexRequire } from 'node:module'; const require = __devexRequire(import.meta.url);",
    },
    logLevel: "warning",
  });
}

// What a bundle reads at run time lies beside it: the sandbox's seccomp filter script (compiled
// by libseccomp's Python bindings when core starts), and the descriptors that reflection
// serves (a runner in a sandbox sees its bundle's folder, not the repository's packages).
copyFileSync(
  join(root, "services/core/src/orchestrator/local/sandbox/seccomp-filter.py"),
  join(root, "services/core/dist/seccomp-filter.py"),
);
for (const dist of ["runner/dist", "services/core/dist"]) {
  copyFileSync(join(root, "gen/src/descriptors.binpb"), join(root, dist, "descriptors.binpb"));
}

for (const workspace of ["sdk", "cli"]) {
  execFileSync("npm", ["run", "--silent", "build", "--workspace", workspace], { cwd: root, stdio: "inherit" });
}
