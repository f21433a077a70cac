/** One side of a copy: a local path, or a path inside a repl (`repl:/path`). */
export type Location = { kind: "local"; path: string } | { kind: "repl"; repl: string; path: string };

/**
 * Reads `repl:/path` as a repl location and anything else as a local path. As with scp,
 * a local path holding a colon can be written `./a:b`. A repl's files are its workspace,
 * so its paths are relative to the workspace root, with or without a leading `/`
 * (`repl:/src/a.js` and `repl:src/a.js` are the same file; `repl:` and `repl:/` the root).
 */
export function parseLocation(argument: string): Location {
  const match = /^([A-Za-z0-9][A-Za-z0-9_.-]*):(.*)$/.exec(argument);
  if (!match || argument.startsWith(".") || argument.startsWith("/")) return { kind: "local", path: argument };
  return { kind: "repl", repl: match[1] ?? "", path: (match[2] ?? "").replace(/^\/+/, "") || "." };
}
