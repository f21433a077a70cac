import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { dirname, join, relative } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code } from "@connectrpc/connect";
import { EntryType, FilesystemService, type UploadRequestSchema } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codeOf, startTestRunner, type TestRunner } from "./harness.js";

// An adversarial corpus: every way out of the workspace we could think of, each with the
// code the contract prescribes, run against a real runner over gRPC. Next to the workspace
// is an "outside" directory holding secrets; after every case and after the race, it must
// be exactly as it was.

type FsClient = Client<typeof FilesystemService>;
type UploadInit = MessageInitShape<typeof UploadRequestSchema>;

let t: TestRunner;
let client: FsClient;
let W: string;
let O: string;
let outsideBefore: string;

const text = (s: string) => new TextEncoder().encode(s);

/** Every entry below a directory with its type, mode, size, mtime and content hash. */
function snapshot(root: string): string {
  const lines: string[] = [];
  const walk = (dir: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const path = join(dir, name);
      const st = fs.lstatSync(path, { bigint: true });
      let detail = "";
      if (st.isFile()) detail = createHash("sha256").update(fs.readFileSync(path)).digest("hex");
      if (st.isSymbolicLink()) detail = fs.readlinkSync(path);
      lines.push(`${relative(root, path)} ${st.mode.toString(8)} ${st.size} ${st.mtimeNs} ${detail}`);
      if (st.isDirectory()) walk(path);
    }
  };
  walk(root);
  return lines.join("\n");
}

beforeAll(async () => {
  t = await startTestRunner();
  client = await t.client(FilesystemService);
  W = t.workspace;
  O = join(dirname(W), "outside");
  fs.mkdirSync(join(O, "sub"), { recursive: true });
  fs.writeFileSync(join(O, "secret.txt"), "TOP SECRET");
  fs.writeFileSync(join(O, "f.txt"), "DECOY SECRET");
  fs.writeFileSync(join(O, "victim.txt"), "SECRET VICTIM");
  fs.writeFileSync(join(O, "only-outside.txt"), "SECRET NAME");
  fs.writeFileSync(join(O, "sub", "inner.txt"), "SECRET INNER");

  fs.writeFileSync(join(W, "file.txt"), "inside");
  fs.writeFileSync(join(W, "file-to-move.txt"), "movable");
  fs.mkdirSync(join(W, "dir", "sub"), { recursive: true });
  fs.writeFileSync(join(W, "dir", "inner.txt"), "inner");
  fs.mkdirSync(join(W, "tree"));
  fs.writeFileSync(join(W, "tree", "ok.txt"), "ok");
  fs.symlinkSync(O, join(W, "tree", "escape"));
  fs.symlinkSync(join(O, "secret.txt"), join(W, "tree", "escape-file"));

  fs.symlinkSync(O, join(W, "out-abs"));
  fs.symlinkSync(O, join(W, "out-abs-2"));
  fs.symlinkSync(relative(W, O), join(W, "out-rel"));
  fs.symlinkSync(join(O, "secret.txt"), join(W, "out-file"));
  fs.symlinkSync("chain2", join(W, "chain1"));
  fs.symlinkSync("dir/../chain3", join(W, "chain2"));
  fs.symlinkSync(`${relative(W, O)}/secret.txt`, join(W, "chain3"));
  fs.symlinkSync("loop-b", join(W, "loop-a"));
  fs.symlinkSync("loop-a", join(W, "loop-b"));
  fs.symlinkSync("self-loop", join(W, "self-loop"));
  for (let i = 0; i < 41; i++) fs.symlinkSync(i === 40 ? "file.txt" : `hop-${i + 1}`, join(W, `hop-${i}`));
  fs.symlinkSync(join(O, "created-by-runner.txt"), join(W, "dangling-out"));
  fs.symlinkSync(join(W, "dir"), join(W, "in-link"));
  fs.symlinkSync(`../${W.split("/").at(-1)}/file.txt`, join(W, "out-and-back"));
  fs.symlinkSync(`/proc/self/root${O}`, join(W, "proc-link"));
  execFileSync("mkfifo", [join(W, "fifo")]);
  fs.mkdirSync(join(W, "with-fifo"));
  execFileSync("mkfifo", [join(W, "with-fifo", "pipe")]);
  fs.writeFileSync(join(W, "with-fifo", "a.txt"), "a");
  outsideBefore = snapshot(O);
});

afterAll(async () => {
  await t.close();
});

async function* uploadOf(path: string): AsyncGenerator<UploadInit> {
  yield { kind: { case: "header", value: { path } } };
  yield { kind: { case: "chunk", value: text("uploaded") } };
}
async function download(c: FsClient, path: string): Promise<string> {
  const parts: Uint8Array[] = [];
  for await (const m of c.download({ path })) if (m.kind.case === "chunk") parts.push(m.kind.value);
  return Buffer.concat(parts).toString();
}
async function watchFirst(c: FsClient, path: string): Promise<void> {
  const abort = new AbortController();
  try {
    for await (const _ of c.watch({ path }, { signal: abort.signal })) break;
  } finally {
    abort.abort();
  }
}
const read = (path: string) => () => client.readFile({ path });
const stat =
  (path: string, followSymlinks = false) =>
  () =>
    client.stat({ path, followSymlinks });
const write =
  (path: string, createParents = false) =>
  () =>
    client.writeFile({ path, content: text("written by the corpus"), createParents });

interface Case {
  name: string;
  run: () => Promise<unknown>;
  code: Code | "ok";
  /** What else must hold afterwards. */
  check?: () => void | Promise<void>;
}

const name256 = "x".repeat(256);
const cases: Case[] = [
  // ".." in its many spellings.
  { name: "stat ..", run: stat(".."), code: Code.PermissionDenied },
  { name: "stat ../", run: stat("../"), code: Code.PermissionDenied },
  { name: "read ../../../../../../etc/passwd", run: read("../../../../../../etc/passwd"), code: Code.PermissionDenied },
  { name: "read dir/../../outside/secret.txt", run: read("dir/../../outside/secret.txt"), code: Code.PermissionDenied },
  { name: "read ./../outside/secret.txt", run: read("./../outside/secret.txt"), code: Code.PermissionDenied },
  { name: "stat dir/./../..", run: stat("dir/./../.."), code: Code.PermissionDenied },
  { name: "stat dir//..//..//", run: stat("dir//..//..//"), code: Code.PermissionDenied },
  {
    name: "read dir/sub/../../../outside/secret.txt",
    run: read("dir/sub/../../../outside/secret.txt"),
    code: Code.PermissionDenied,
  },
  { name: "stat ../workspace (out and back in)", run: stat("../workspace/file.txt"), code: Code.PermissionDenied },
  { name: "read ....//....//etc/passwd (literal names)", run: read("....//....//etc/passwd"), code: Code.NotFound },
  { name: "read ..%2f..%2fetc%2fpasswd (not decoded)", run: read("..%2f..%2fetc%2fpasswd"), code: Code.NotFound },
  { name: "read %2e%2e/%2e%2e/etc/passwd (not decoded)", run: read("%2e%2e/%2e%2e/etc/passwd"), code: Code.NotFound },
  {
    name: "write %2e%2e creates a file of that literal name inside",
    run: write("%2e%2e"),
    code: "ok",
    check: () => expect(fs.readFileSync(join(W, "%2e%2e"), "utf8")).toBe("written by the corpus"),
  },
  {
    name: "read ..\\..\\outside\\secret.txt (backslashes)",
    run: read("..\\..\\outside\\secret.txt"),
    code: Code.NotFound,
  },
  {
    name: "write ..\\escape.txt creates a literal name inside",
    run: write("..\\escape.txt"),
    code: "ok",
    check: () => expect(fs.existsSync(join(W, "..\\escape.txt"))).toBe(true),
  },
  { name: "read ․․/outside (one-dot leaders)", run: read("\u2024\u2024/outside/secret.txt"), code: Code.NotFound },
  { name: "read ．．/outside (fullwidth dots)", run: read("\uff0e\uff0e/outside/secret.txt"), code: Code.NotFound },
  { name: "read ~/../outside (no tilde expansion)", run: read("~/../outside/secret.txt"), code: Code.NotFound },
  { name: "read file:///etc/passwd (no URLs)", run: read("file:///etc/passwd"), code: Code.NotFound },

  // Absolute paths.
  { name: "stat /", run: stat("/"), code: Code.PermissionDenied },
  { name: "read /etc/passwd", run: read("/etc/passwd"), code: Code.PermissionDenied },
  {
    name: "read <outside>/secret.txt",
    run: () => client.readFile({ path: join(O, "secret.txt") }),
    code: Code.PermissionDenied,
  },
  {
    name: "stat /proc/self/root/<workspace>/file.txt",
    run: () => client.stat({ path: `/proc/self/root${W}/file.txt` }),
    code: Code.PermissionDenied,
  },
  { name: "read /proc/self/root/etc/passwd", run: read("/proc/self/root/etc/passwd"), code: Code.PermissionDenied },
  { name: "read /proc/self/environ", run: read("/proc/self/environ"), code: Code.PermissionDenied },
  {
    name: "read <workspace>/../outside/secret.txt",
    run: () => client.readFile({ path: `${W}/../outside/secret.txt` }),
    code: Code.PermissionDenied,
  },
  {
    name: "read <workspace>/../workspace/file.txt (out and back in)",
    run: () => client.readFile({ path: `${W}/../${W.split("/").at(-1)}/file.txt` }),
    code: Code.PermissionDenied,
  },
  {
    name: "read <workspace>evil/file.txt (a prefix is not a parent)",
    run: () => client.readFile({ path: `${W}evil/file.txt` }),
    code: Code.PermissionDenied,
  },
  {
    name: "read <workspace>/file.txt (absolute inside is fine)",
    run: async () => expect((await client.readFile({ path: `${W}/file.txt` })).entry?.path).toBe("file.txt"),
    code: "ok",
  },

  // Malformed paths.
  { name: "stat an empty path", run: stat(""), code: Code.InvalidArgument },
  { name: "read file.txt<NUL>.png", run: read("file.txt\0.png"), code: Code.InvalidArgument },
  { name: "write evil<NUL>/../../x", run: write("evil\0/../../x"), code: Code.InvalidArgument },
  { name: "stat a 256-byte name", run: stat(name256), code: Code.InvalidArgument },
  { name: "write a 256-byte name below a directory", run: write(`dir/${name256}`), code: Code.InvalidArgument },
  { name: "stat a 256-byte name of 128 two-byte characters", run: stat("é".repeat(128)), code: Code.InvalidArgument },
  {
    name: "write a 255-byte name (the limit)",
    run: write("y".repeat(255)),
    code: "ok",
    check: () => expect(fs.existsSync(join(W, "y".repeat(255)))).toBe(true),
  },
  { name: "stat a 4,097-byte path", run: stat(`${"a/".repeat(2048)}a`), code: Code.InvalidArgument },
  { name: "stat a 4,096-byte path (the limit)", run: stat(`${"./".repeat(2044)}file.txt`), code: "ok" },

  // Symlinks that lead out.
  {
    name: "read out-abs/secret.txt (absolute dir link as parent)",
    run: read("out-abs/secret.txt"),
    code: Code.PermissionDenied,
  },
  {
    name: "read out-rel/secret.txt (relative dir link as parent)",
    run: read("out-rel/secret.txt"),
    code: Code.PermissionDenied,
  },
  { name: "stat out-abs/../file.txt (link/..)", run: stat("out-abs/../file.txt"), code: Code.PermissionDenied },
  { name: "list out-abs", run: () => client.listDirectory({ path: "out-abs" }), code: Code.PermissionDenied },
  { name: "read out-file (link to an outside file)", run: read("out-file"), code: Code.PermissionDenied },
  {
    name: "stat out-file describes the link, target type unknown",
    run: async () =>
      expect((await client.stat({ path: "out-file" })).entry).toMatchObject({
        type: EntryType.SYMLINK,
        symlinkTargetType: EntryType.UNSPECIFIED,
      }),
    code: "ok",
  },
  { name: "stat out-file following it", run: stat("out-file", true), code: Code.PermissionDenied },
  { name: "read chain1 (a chain that ends outside)", run: read("chain1"), code: Code.PermissionDenied },
  { name: "download chain1", run: () => download(client, "chain1"), code: Code.PermissionDenied },
  { name: "read loop-a (a symlink loop)", run: read("loop-a"), code: Code.FailedPrecondition },
  { name: "read self-loop", run: read("self-loop"), code: Code.FailedPrecondition },
  { name: "read hop-0 (41 symlinks in a row)", run: read("hop-0"), code: Code.FailedPrecondition },
  {
    name: "read hop-1 (40 symlinks in a row is still fine)",
    run: async () => expect(Buffer.from((await client.readFile({ path: "hop-1" })).content).toString()).toBe("inside"),
    code: "ok",
  },
  { name: "read out-and-back (relative link out and back in)", run: read("out-and-back"), code: Code.PermissionDenied },
  {
    name: "read proc-link/secret.txt (link into /proc/self/root)",
    run: read("proc-link/secret.txt"),
    code: Code.PermissionDenied,
  },
  {
    name: "read in-link/inner.txt (absolute link inside is fine)",
    run: async () => expect((await client.readFile({ path: "in-link/inner.txt" })).entry?.path).toBe("dir/inner.txt"),
    code: "ok",
  },
  {
    name: "write through dangling-out (a dangling link to outside)",
    run: write("dangling-out"),
    code: Code.PermissionDenied,
    check: () => expect(fs.existsSync(join(O, "created-by-runner.txt"))).toBe(false),
  },
  {
    name: "upload through dangling-out",
    run: () => client.upload(uploadOf("dangling-out")),
    code: Code.PermissionDenied,
  },
  { name: "write out-abs/new.txt", run: write("out-abs/new.txt"), code: Code.PermissionDenied },
  {
    name: "write out-file (overwrite an outside file through a link)",
    run: write("out-file"),
    code: Code.PermissionDenied,
    check: () => expect(fs.readFileSync(join(O, "secret.txt"), "utf8")).toBe("TOP SECRET"),
  },
  { name: "write out-rel/x/y with create_parents", run: write("out-rel/x/y", true), code: Code.PermissionDenied },
  {
    name: "mkdir out-abs/newdir",
    run: () => client.makeDirectory({ path: "out-abs/newdir" }),
    code: Code.PermissionDenied,
  },
  {
    name: "mkdir -p out-abs/a/b",
    run: () => client.makeDirectory({ path: "out-abs/a/b", parents: true }),
    code: Code.PermissionDenied,
  },
  {
    name: "remove out-abs/secret.txt",
    run: () => client.remove({ path: "out-abs/secret.txt" }),
    code: Code.PermissionDenied,
  },
  {
    name: "remove out-rel/ recursively (a trailing slash follows the link)",
    run: () => client.remove({ path: "out-rel/", recursive: true }),
    code: Code.PermissionDenied,
  },
  {
    name: "remove out-abs-2 removes the link, not the directory",
    run: () => client.remove({ path: "out-abs-2", recursive: true }),
    code: "ok",
    check: () => {
      expect(fs.existsSync(join(W, "out-abs-2"))).toBe(false);
      expect(fs.existsSync(join(O, "secret.txt"))).toBe(true);
    },
  },
  { name: "watch out-abs", run: () => watchFirst(client, "out-abs"), code: Code.PermissionDenied },
  { name: "download out-file", run: () => download(client, "out-file"), code: Code.PermissionDenied },
  { name: "upload out-abs/up.txt", run: () => client.upload(uploadOf("out-abs/up.txt")), code: Code.PermissionDenied },

  // Move and copy with one end outside.
  {
    name: "move <outside>/secret.txt in",
    run: () => client.move({ sourcePath: join(O, "secret.txt"), destinationPath: "stolen.txt" }),
    code: Code.PermissionDenied,
  },
  {
    name: "move out-abs/secret.txt in",
    run: () => client.move({ sourcePath: "out-abs/secret.txt", destinationPath: "stolen.txt" }),
    code: Code.PermissionDenied,
  },
  {
    name: "move a file to <outside>/dropped.txt",
    run: () => client.move({ sourcePath: "file-to-move.txt", destinationPath: join(O, "dropped.txt") }),
    code: Code.PermissionDenied,
  },
  {
    name: "move a file to out-abs/dropped.txt",
    run: () => client.move({ sourcePath: "file-to-move.txt", destinationPath: "out-abs/dropped.txt" }),
    code: Code.PermissionDenied,
  },
  {
    name: "move a file to ../outside/dropped.txt",
    run: () => client.move({ sourcePath: "file-to-move.txt", destinationPath: "../outside/dropped.txt" }),
    code: Code.PermissionDenied,
  },
  {
    name: "copy out-abs/secret.txt in",
    run: () => client.copy({ sourcePath: "out-abs/secret.txt", destinationPath: "stolen.txt" }),
    code: Code.PermissionDenied,
  },
  {
    name: "copy file.txt to out-abs/x",
    run: () => client.copy({ sourcePath: "file.txt", destinationPath: "out-abs/x" }),
    code: Code.PermissionDenied,
  },
  {
    name: "copy file.txt to <outside>/x",
    run: () => client.copy({ sourcePath: "file.txt", destinationPath: join(O, "x") }),
    code: Code.PermissionDenied,
  },
  {
    name: "copy out-file copies the link, not the outside content",
    run: () => client.copy({ sourcePath: "out-file", destinationPath: "copied-link" }),
    code: "ok",
    check: async () => {
      expect(fs.readlinkSync(join(W, "copied-link"))).toBe(join(O, "secret.txt"));
      expect(await codeOf(read("copied-link"))).toBe(Code.PermissionDenied);
    },
  },
  {
    name: "copy a tree holding links to outside copies the links, never what they point to",
    run: () => client.copy({ sourcePath: "tree", destinationPath: "tree-copy", recursive: true }),
    code: "ok",
    check: async () => {
      expect(fs.lstatSync(join(W, "tree-copy", "escape")).isSymbolicLink()).toBe(true);
      expect(fs.lstatSync(join(W, "tree-copy", "escape-file")).isSymbolicLink()).toBe(true);
      expect(fs.readFileSync(join(W, "tree-copy", "ok.txt"), "utf8")).toBe("ok");
      expect(await codeOf(read("tree-copy/escape/secret.txt"))).toBe(Code.PermissionDenied);
    },
  },
  {
    name: "copy out-abs recursively copies the link itself",
    run: () => client.copy({ sourcePath: "out-abs", destinationPath: "copy-of-link", recursive: true }),
    code: "ok",
    check: () => expect(fs.lstatSync(join(W, "copy-of-link")).isSymbolicLink()).toBe(true),
  },

  {
    name: "list . shows links to outside as links and never descends into them",
    run: async () => {
      const { entries } = await client.listDirectory({ path: ".", depth: 3, pageSize: 1000 });
      expect(entries.filter((e) => e.path.startsWith("out-abs/") || e.path.startsWith("out-rel/"))).toEqual([]);
      expect(entries.find((e) => e.path === "out-abs")).toMatchObject({
        type: EntryType.SYMLINK,
        symlinkTargetType: EntryType.UNSPECIFIED,
      });
      expect(entries.find((e) => e.path === "in-link")?.symlinkTargetType).toBe(EntryType.DIRECTORY);
    },
    code: "ok",
  },

  // Objects that are neither files nor directories.
  { name: "read a FIFO (without waiting for a writer)", run: read("fifo"), code: Code.FailedPrecondition },
  { name: "download a FIFO", run: () => download(client, "fifo"), code: Code.FailedPrecondition },
  {
    name: "copy a directory holding a FIFO skips the FIFO",
    run: () => client.copy({ sourcePath: "with-fifo", destinationPath: "with-fifo-copy", recursive: true }),
    code: "ok",
    check: () => expect(fs.readdirSync(join(W, "with-fifo-copy"))).toEqual(["a.txt"]),
  },

  // A file where a directory is needed, and the reverse.
  { name: "list a file", run: () => client.listDirectory({ path: "file.txt" }), code: Code.FailedPrecondition },
  { name: "read a directory", run: read("dir"), code: Code.FailedPrecondition },
  { name: "download a directory", run: () => download(client, "dir"), code: Code.FailedPrecondition },
  {
    name: "write over a directory",
    run: write("dir"),
    code: Code.FailedPrecondition,
    check: () => expect(fs.statSync(join(W, "dir")).isDirectory()).toBe(true),
  },
  { name: "mkdir over a file", run: () => client.makeDirectory({ path: "file.txt" }), code: Code.AlreadyExists },
  { name: "read file.txt/x (a file as a parent)", run: read("file.txt/x"), code: Code.FailedPrecondition },
  { name: "write file.txt/x with create_parents", run: write("file.txt/x", true), code: Code.FailedPrecondition },
  {
    name: "read file.txt/ (a trailing slash needs a directory)",
    run: read("file.txt/"),
    code: Code.FailedPrecondition,
  },
  {
    name: "write new-file/ (a trailing slash needs a directory)",
    run: write("new-file/"),
    code: Code.FailedPrecondition,
  },

  // The root itself.
  { name: "remove .", run: () => client.remove({ path: ".", recursive: true }), code: Code.FailedPrecondition },
  {
    name: "remove dir/.. (the root again)",
    run: () => client.remove({ path: "dir/..", recursive: true }),
    code: Code.FailedPrecondition,
  },
  {
    name: "remove <workspace> (absolute)",
    run: () => client.remove({ path: W, recursive: true }),
    code: Code.FailedPrecondition,
  },
  { name: "remove an empty path", run: () => client.remove({ path: "" }), code: Code.InvalidArgument },
  {
    name: "move the root",
    run: () => client.move({ sourcePath: ".", destinationPath: "moved-root" }),
    code: Code.FailedPrecondition,
  },
  {
    name: "copy the root into itself",
    run: () => client.copy({ sourcePath: ".", destinationPath: "root-copy", recursive: true }),
    code: Code.FailedPrecondition,
  },
  { name: "write .", run: write("."), code: Code.FailedPrecondition },
  {
    name: "move a file over the root",
    run: () => client.move({ sourcePath: "file.txt", destinationPath: ".", overwrite: true }),
    code: Code.FailedPrecondition,
  },
];

describe("the adversarial path corpus", () => {
  it("has at least 40 cases", () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it.each(cases.map((c) => [`${c.name} → ${c.code === "ok" ? "ok" : Code[c.code]}`, c] as const))(
    "%s",
    async (_, { run, code, check }) => {
      expect(await codeOf(run)).toBe(code);
      await check?.();
      expect(snapshot(O)).toBe(outsideBefore);
    },
  );

  it("leaves the outside directory exactly as it was", () => {
    expect(snapshot(O)).toBe(outsideBefore);
    expect(fs.readdirSync(W).filter((name) => name.startsWith(".devex-"))).toEqual([]);
  });
});

describe("a symlink swapped in during operations", () => {
  it("never reads, writes, lists or removes outside the workspace while directories and files are swapped for links", async () => {
    // "swap" is a directory and "fswap" a file; another process keeps replacing each of them
    // with a symlink to the outside (and back) as fast as it can.
    fs.mkdirSync(join(W, "swap"));
    fs.writeFileSync(join(W, "swap", "f.txt"), "inside");
    fs.writeFileSync(join(W, "swap", "victim.txt"), "inside victim");
    fs.writeFileSync(join(W, "fswap"), "inside file");
    const before = snapshot(O);
    const stopFile = join(dirname(W), "stop-swapping");
    const swapper = spawn(
      process.execPath,
      [
        "-e",
        `
          const fs = require("fs");
          const [w, o, stop] = process.argv.slice(1);
          let swaps = 0;
          const attempt = (f) => { try { f(); } catch {} };
          while (swaps % 64 !== 0 || !fs.existsSync(stop)) {
            attempt(() => fs.renameSync(w + "/swap", w + "/swap.real"));
            attempt(() => fs.symlinkSync(o, w + "/swap"));
            attempt(() => fs.unlinkSync(w + "/swap"));
            attempt(() => fs.renameSync(w + "/swap.real", w + "/swap"));
            attempt(() => fs.renameSync(w + "/fswap", w + "/fswap.real"));
            attempt(() => fs.symlinkSync(o + "/secret.txt", w + "/fswap"));
            attempt(() => fs.unlinkSync(w + "/fswap"));
            attempt(() => fs.renameSync(w + "/fswap.real", w + "/fswap"));
            swaps++;
          }
          console.log(swaps);
          `,
        W,
        O,
        stopFile,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let swapperOutput = "";
    swapper.stdout.on("data", (d) => {
      swapperOutput += d;
    });
    const exited = new Promise<void>((resolve) => swapper.once("exit", () => resolve()));

    let running = true;
    const codes = new Map<string, number>();
    const leaks: string[] = [];
    const tally = async (call: () => Promise<unknown>) => {
      const code = await codeOf(call);
      const key = code === "ok" ? "ok" : Code[code];
      codes.set(key, (codes.get(key) ?? 0) + 1);
    };
    const looksSecret = (data: Uint8Array | string) => Buffer.from(data).toString().includes("SECRET");
    const operations: (() => Promise<unknown>)[] = [
      () => client.writeFile({ path: "swap/f.txt", content: text("written") }),
      () => client.writeFile({ path: "fswap", content: text("written") }),
      () => client.upload(uploadOf("swap/u.txt")),
      () => client.makeDirectory({ path: "swap/newdir" }),
      () => client.remove({ path: "swap/newdir" }),
      () => client.remove({ path: "swap/victim.txt" }),
      () => client.copy({ sourcePath: "file.txt", destinationPath: "swap/c.txt", overwrite: true }),
      async () => {
        const res = await client.readFile({ path: "swap/f.txt" });
        if (looksSecret(res.content)) leaks.push("readFile swap/f.txt");
      },
      async () => {
        const res = await client.readFile({ path: "fswap" });
        if (looksSecret(res.content)) leaks.push("readFile fswap");
      },
      async () => {
        if (looksSecret(await download(client, "fswap"))) leaks.push("download fswap");
      },
      async () => {
        const res = await client.listDirectory({ path: "swap" });
        if (res.entries.some((e) => e.name === "only-outside.txt" || e.name === "secret.txt")) {
          leaks.push("listDirectory swap");
        }
      },
      async () => {
        const res = await client.stat({ path: "swap/f.txt", followSymlinks: true });
        if (res.entry?.sizeBytes === BigInt("DECOY SECRET".length)) leaks.push("stat swap/f.txt");
      },
    ];
    const worker = async (offset: number) => {
      for (let i = offset; running; i++) await tally(operations[i % operations.length] as () => Promise<unknown>);
    };
    // Race for at least 2.5 s, and until calls have both succeeded and met the outside link.
    const started = Date.now();
    const stopper = setInterval(() => {
      const raced = (codes.get("ok") ?? 0) > 0 && (codes.get("PermissionDenied") ?? 0) > 0;
      if ((raced && Date.now() - started > 2_500) || Date.now() - started > 20_000) running = false;
    }, 100);
    await Promise.all([0, 3, 6, 9].map(worker));
    clearInterval(stopper);
    fs.writeFileSync(stopFile, "");
    await exited;

    console.info(`swap rounds: ${swapperOutput.trim()}; outcomes: ${JSON.stringify(Object.fromEntries(codes))}`);
    expect(Number(swapperOutput.trim())).toBeGreaterThan(100);
    expect(leaks).toEqual([]);
    expect(snapshot(O)).toBe(before);
    // The race really happened: some calls went through and some met the outside link.
    expect(codes.get("ok") ?? 0).toBeGreaterThan(0);
    expect(codes.get("PermissionDenied") ?? 0).toBeGreaterThan(0);
    const allowed = ["ok", "PermissionDenied", "NotFound", "Aborted", "FailedPrecondition", "AlreadyExists"];
    expect([...codes.keys()].filter((k) => !allowed.includes(k))).toEqual([]);
  }, 40_000);
});
