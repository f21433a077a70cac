/** Decides whether a path (relative to the watched directory, "/"-separated) is excluded. */
export type ExcludeMatcher = (path: string, isDirectory: boolean) => boolean;

interface Rule {
  regex: RegExp;
  negate: boolean;
  directoryOnly: boolean;
}

/**
 * Compiles gitignore-syntax patterns: "#" comments and blank lines are ignored, "!"
 * re-includes, a trailing "/" matches directories only, a pattern with a "/" elsewhere is
 * anchored at the watched directory while one without matches a name at any depth, and
 * "*", "?", "[...]" and "**" glob as git does. As in git, a path below an excluded
 * directory is excluded whatever later patterns say.
 */
export function compileExcludes(patterns: readonly string[]): ExcludeMatcher {
  const rules = patterns.map(compileRule).filter((r): r is Rule => r !== undefined);
  if (rules.length === 0) return () => false;
  const matchOne = (path: string, isDirectory: boolean): boolean => {
    let excluded = false;
    for (const rule of rules) {
      if (rule.directoryOnly && !isDirectory) continue;
      if (rule.regex.test(path)) excluded = !rule.negate;
    }
    return excluded;
  };
  return (path, isDirectory) => {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      if (matchOne(parts.slice(0, i).join("/"), true)) return true;
    }
    return matchOne(path, isDirectory);
  };
}

function compileRule(line: string): Rule | undefined {
  let pattern = line.replace(/(?<!\\)\s+$/, "");
  if (pattern === "" || pattern.startsWith("#")) return undefined;
  let negate = false;
  if (pattern.startsWith("!")) {
    negate = true;
    pattern = pattern.slice(1);
  }
  let directoryOnly = false;
  if (pattern.endsWith("/")) {
    directoryOnly = true;
    pattern = pattern.replace(/\/+$/, "");
  }
  if (pattern === "") return undefined;
  const anchored = pattern.includes("/");
  if (pattern.startsWith("/")) pattern = pattern.slice(1);
  const body = globToRegex(pattern);
  return { regex: new RegExp(anchored ? `^${body}$` : `^(?:.*/)?${body}$`), negate, directoryOnly };
}

function globToRegex(glob: string): string {
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === "*") {
      if (glob[i + 1] === "*") {
        const atStart = i === 0 || glob[i - 1] === "/";
        const atEnd = i + 2 === glob.length || glob[i + 2] === "/";
        if (atStart && atEnd) {
          // "**/" matches any number of directories, "/**" everything below.
          if (i + 2 === glob.length) out += ".*";
          else {
            out += "(?:.*/)?";
            i++;
          }
          i++;
          continue;
        }
      }
      out += "[^/]*";
    } else if (c === "?") {
      out += "[^/]";
    } else if (c === "[") {
      const close = glob.indexOf("]", i + 2);
      if (close === -1) {
        out += "\\[";
        continue;
      }
      let set = glob.slice(i + 1, close);
      if (set.startsWith("!")) set = `^${set.slice(1)}`;
      out += `[${set.replace(/\\/g, "\\\\")}]`;
      i = close;
    } else if (c === "\\" && i + 1 < glob.length) {
      out += escapeRegex(glob[++i] as string);
    } else {
      out += escapeRegex(c);
    }
  }
  return out;
}

function escapeRegex(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
