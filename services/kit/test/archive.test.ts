import { execFile, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmod,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import {
  type ArchiveCompression,
  ArchiveIntegrityError,
  type ArchiveTotals,
  InvalidArchiveError,
  type PackOptions,
  type PackTotals,
  packDirectory,
  type UnpackOptions,
  unpackArchive,
} from "../src/index.js";

const execFileAsync = promisify(execFile);
const scratch = await mkdtemp(join(tmpdir(), "devex-archive-test-"));
afterAll(() => rm(scratch, { recursive: true, force: true }));

let dirs = 0;
/** A fresh directory under the test's scratch directory. */
async function freshDir(name = "dir"): Promise<string> {
  const dir = join(scratch, `${name}-${++dirs}`);
  await mkdir(dir);
  return dir;
}

/** Packs `root` and collects the archive, checking that every chunk is at most 1 MiB. */
async function pack(root: string, options: PackOptions): Promise<{ bytes: Buffer; totals: PackTotals }> {
  const packed = packDirectory(root, options);
  const chunks: Buffer[] = [];
  for await (const chunk of packed.chunks) {
    expect(chunk.byteLength).toBeGreaterThan(0);
    expect(chunk.byteLength).toBeLessThanOrEqual(1024 * 1024);
    chunks.push(Buffer.from(chunk));
  }
  return { bytes: Buffer.concat(chunks), totals: await packed.totals };
}

/** The bytes as a stream of 64 KiB chunks. */
async function* streamOf(bytes: Buffer): AsyncGenerator<Uint8Array> {
  for (let offset = 0; offset < bytes.length; offset += 65_536) yield bytes.subarray(offset, offset + 65_536);
}

function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Unpacks `bytes` into a fresh directory, checking them against their own checksum unless told otherwise. */
async function unpack(
  bytes: Buffer,
  options: Partial<UnpackOptions> & { compression: ArchiveCompression },
): Promise<{ into: string; totals: ArchiveTotals }> {
  const into = await freshDir("into");
  const totals = await unpackArchive(streamOf(bytes), into, { expectedSha256: sha256(bytes), ...options });
  return { into, totals };
}

/** Every entry below `root` (raw names), with what a round trip must keep. */
async function describeTree(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const inodes = new Map<bigint, string>();
  const visit = async (dir: Buffer, rel: string) => {
    const names = (await readdir(dir, { encoding: "buffer" })).sort(Buffer.compare);
    for (const name of names) {
      const path = Buffer.concat([dir, Buffer.from("/"), name]);
      const key = rel ? `${rel}/${name.toString("hex")}` : name.toString("hex");
      const s = await lstat(path, { bigint: true });
      const mode = (Number(s.mode) & 0o7777).toString(8);
      if (s.isSymbolicLink()) {
        out.set(key, `link -> ${(await readlink(path)).toString()}`);
      } else if (s.isDirectory()) {
        out.set(key, `dir ${mode} ${s.mtimeNs}`);
        await visit(path, key);
      } else {
        const sameAs = s.nlink > 1n ? inodes.get(s.ino) : undefined;
        if (s.nlink > 1n && !sameAs) inodes.set(s.ino, key);
        const digest = createHash("sha256")
          .update(await readFile(path))
          .digest("hex");
        out.set(key, `file ${mode} ${s.mtimeNs} ${s.size} ${digest}${sameAs ? ` hard link of ${sameAs}` : ""}`);
      }
    }
  };
  await visit(Buffer.from(root), "");
  const rootStats = await stat(root, { bigint: true });
  out.set(".", `root ${(Number(rootStats.mode) & 0o7777).toString(8)} ${rootStats.mtimeNs}`);
  return out;
}

const oddName = "name with spaces\nand a newline, ünïcødé 🙂";

/** A tree with most of what a workspace can hold; `outside` is a directory a symlink points to. */
async function makeTree(root: string, outside: string): Promise<void> {
  await mkdir(join(root, "a/b/c"), { recursive: true });
  await writeFile(join(root, "a/b/c/deep.txt"), "deep\n");
  await writeFile(join(root, "a/run.sh"), "#!/bin/sh\necho hi\n");
  await chmod(join(root, "a/run.sh"), 0o755);
  await writeFile(join(root, "secret"), "s3cret");
  await chmod(join(root, "secret"), 0o600);
  await writeFile(join(root, "shared"), "group may read");
  await chmod(join(root, "shared"), 0o640);
  await mkdir(join(root, "empty"));
  await mkdir(join(root, "private-dir"));
  await chmod(join(root, "private-dir"), 0o700);
  await mkdir(join(root, "group-dir"));
  await writeFile(join(root, "group-dir/x"), "x");
  await chmod(join(root, "group-dir"), 0o750);
  await symlink("a/b", join(root, "link-inside"));
  await writeFile(join(outside, "target"), "outside, must not be copied");
  await symlink(join(outside, "target"), join(root, "link-outside"));
  await symlink("../../outside-relative", join(root, "a/link-up"));
  await writeFile(join(root, "hard-1"), "one inode, two names");
  await link(join(root, "hard-1"), join(root, "hard-2"));
  await writeFile(join(root, oddName), "odd");
  await writeFile(join(root, "-rf"), "a name that looks like an option");
  await writeFile(join(root, "back\\nslash"), "a backslash, not a newline");
  await writeFile(Buffer.concat([Buffer.from(`${root}/`), Buffer.from([0x6e, 0xff, 0xfe])]), "not UTF-8");
  await writeFile(join(root, "big.bin"), randomBytes(5 * 1024 * 1024));
  await utimes(join(root, "a/b/c/deep.txt"), 1_600_000_000, 1_600_000_000.123456);
  await utimes(join(root, "secret"), 1_500_000_000, 1_500_000_000);
  await utimes(join(root, "empty"), 1_400_000_000, 1_400_000_000.5);
  await utimes(join(root, "a/b"), 1_450_000_000, 1_450_000_000.25);
}

/** The tree of makeTree: 12 files (a hard link's two names count twice), 6 directories, 3 symlinks. */
const treeCounts = { fileCount: 12, directoryCount: 6, symlinkCount: 3 };

/** The number of bytes of file contents in makeTree's tree. */
async function treeContentBytes(root: string): Promise<number> {
  const { stdout } = await execFileAsync("find", [root, "-type", "f", "-printf", "%s\\n"]);
  return stdout
    .trim()
    .split("\n")
    .reduce((sum, size) => sum + Number(size), 0);
}

describe("packDirectory and unpackArchive", () => {
  const magic: Record<ArchiveCompression, (bytes: Buffer) => boolean> = {
    zstd: (bytes) => bytes.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])),
    gzip: (bytes) => bytes.subarray(0, 2).equals(Buffer.from([0x1f, 0x8b])),
    none: (bytes) => bytes.subarray(257, 262).toString() === "ustar",
  };

  const cases: { compression: ArchiveCompression; zstdBackend?: "program" | "zlib" }[] = [
    { compression: "zstd", zstdBackend: "program" },
    { compression: "zstd", zstdBackend: "zlib" },
    { compression: "gzip" },
    { compression: "none" },
  ];

  for (const { compression, zstdBackend } of cases) {
    it(`round-trips a tree exactly (${compression}${zstdBackend ? `, ${zstdBackend}` : ""})`, async () => {
      const root = await freshDir("tree");
      const outside = await freshDir("outside");
      await makeTree(root, outside);
      await chmod(root, 0o751);
      await utimes(root, 1_300_000_000, 1_300_000_000);
      const before = await describeTree(root);

      const { bytes, totals } = await pack(root, { compression, zstdBackend });
      expect(magic[compression](bytes)).toBe(true);
      expect(totals).toEqual({
        ...treeCounts,
        contentBytes: await treeContentBytes(root),
        archiveBytes: bytes.length,
        sha256: sha256(bytes),
        skippedCount: 0,
        skipped: [],
      });

      const { into, totals: unpacked } = await unpack(bytes, { compression, zstdBackend });
      expect(await describeTree(into)).toEqual(before);
      const { skippedCount: _count, skipped: _skipped, ...archived } = totals;
      expect(unpacked).toEqual(archived);
      // The symlink out is a link still; what it points to was not archived.
      expect(await readlink(join(into, "link-outside"))).toBe(join(outside, "target"));
      const decompress = { zstd: ["--zstd"], gzip: ["--gzip"], none: [] }[compression];
      const listing = execFileSync("tar", ["-tv", ...decompress, "-f", "-"], { input: bytes }).toString();
      expect(listing).toMatch(/link-outside -> .*outside-\d+\/target/);
      expect(listing).not.toContain("outside, must not be copied");
      expect(listing).toMatch(/hard-2 link to hard-1/);
      expect(listing).toMatch(/ 0\/0 /);
    });
  }

  it("reads zstd archives the zstd program made with Node's zstd, and the other way round", async () => {
    const root = await freshDir("tree");
    await writeFile(join(root, "f"), "hello");
    const byProgram = await pack(root, { compression: "zstd", zstdBackend: "program" });
    const byZlib = await pack(root, { compression: "zstd", zstdBackend: "zlib" });
    await expect(unpack(byProgram.bytes, { compression: "zstd", zstdBackend: "zlib" })).resolves.toBeDefined();
    const { into } = await unpack(byZlib.bytes, { compression: "zstd", zstdBackend: "program" });
    expect(await readFile(join(into, "f"), "utf8")).toBe("hello");
  });

  it("leaves out sockets and FIFOs, and says so", async () => {
    const root = await freshDir("tree");
    await writeFile(join(root, "f"), "x");
    execFileSync("mkfifo", [join(root, "fifo")]);
    const { bytes, totals } = await pack(root, { compression: "none" });
    expect(totals).toMatchObject({ fileCount: 1, skippedCount: 1, skipped: [{ path: "fifo", reason: "fifo" }] });
    const { into } = await unpack(bytes, { compression: "none" });
    expect(await readdir(into)).toEqual(["f"]);
  });

  it("leaves out a file that vanishes before tar reaches it, without failing", async () => {
    const root = await freshDir("tree");
    for (let i = 0; i < 8; i++) await writeFile(join(root, `f${i}`), randomBytes(2 * 1024 * 1024));
    const packed = packDirectory(root, { compression: "none" });
    const chunks: Buffer[] = [];
    for await (const chunk of packed.chunks) {
      // tar is still at the start, held back by this reader; the list is complete.
      if (chunks.length === 0) await rm(join(root, "f7"));
      chunks.push(Buffer.from(chunk));
    }
    expect((await packed.totals).fileCount).toBe(8);
    const { into } = await unpack(Buffer.concat(chunks), { compression: "none" });
    expect((await readdir(into)).sort()).toEqual(["f0", "f1", "f2", "f3", "f4", "f5", "f6"]);
  });

  it("honours an ignore file and exclude patterns as git would", async () => {
    const root = await freshDir("tree");
    const files = [
      "a.log",
      "keep.log",
      "sub/b.log",
      "build/out.js",
      "src/build",
      "src/deep/build/x.js",
      "rootonly.txt",
      "sub/rootonly.txt",
      "docs/draft.md",
      "docs/x/y/draft.md",
      "docs/x/final.md",
      "node_modules/pkg/index.js",
      "src/node_modules/y.js",
      "src/a.tmp",
      "src/deep/b.tmp",
      "a.tmp",
      "kept/file",
    ];
    for (const file of files) {
      await mkdir(dirname(join(root, file)), { recursive: true });
      await writeFile(join(root, file), file);
    }
    await mkdir(join(root, "config"));
    await writeFile(
      join(root, "config/.devexignore"),
      ["# comment", "*.log", "!keep.log", "build/", "/rootonly.txt", "docs/**/draft.md", ""].join("\n"),
    );
    const { bytes } = await pack(root, {
      compression: "zstd",
      ignoreFile: "config/.devexignore",
      exclude: ["node_modules/", "src/**/*.tmp"],
    });
    const { into } = await unpack(bytes, { compression: "zstd" });
    const { stdout } = await execFileAsync("find", [".", "-type", "f"], { cwd: into });
    expect(stdout.trim().split("\n").sort()).toEqual(
      [
        "./keep.log",
        "./src/build",
        "./sub/rootonly.txt",
        "./docs/x/final.md",
        "./a.tmp",
        "./kept/file",
        "./config/.devexignore",
      ].sort(),
    );
    expect(await readdir(join(into, "build")).catch(() => "absent")).toBe("absent");
  });

  it("treats a missing ignore file as no rules and refuses one outside the root", async () => {
    const root = await freshDir("tree");
    await writeFile(join(root, "f"), "x");
    const { totals } = await pack(root, { compression: "none", ignoreFile: "missing/.devexignore" });
    expect(totals.fileCount).toBe(1);
    await expect(pack(root, { compression: "none", ignoreFile: "../elsewhere" })).rejects.toThrow(RangeError);
    const outside = await freshDir("outside");
    await writeFile(join(outside, "rules"), "*");
    await symlink(join(outside, "rules"), join(root, ".devexignore"));
    await expect(pack(root, { compression: "none", ignoreFile: ".devexignore" })).rejects.toThrow(/outside/);
  });

  it("makes the same bytes for the same tree when reproducible, whatever the times", async () => {
    const make = async (seconds: number) => {
      const root = await freshDir("tree");
      await mkdir(join(root, "d/e"), { recursive: true });
      for (const name of ["z", "a", "m", "d/e/f", "d/b"]) await writeFile(join(root, name), `content of ${name}`);
      await symlink("d/e", join(root, "link"));
      for (const name of ["z", "a", "m", "d/e/f", "d/b", "d/e", "d", "."]) {
        await utimes(join(root, name), seconds, seconds + 0.5);
      }
      return root;
    };
    const first = await make(1_500_000_000);
    const second = await make(1_700_000_000);
    for (const compression of ["zstd", "gzip", "none"] as const) {
      const a = await pack(first, { compression, reproducible: true });
      const b = await pack(second, { compression, reproducible: true });
      expect(b.totals.sha256).toBe(a.totals.sha256);
      expect(b.bytes.equals(a.bytes)).toBe(true);
      const c = await pack(second, { compression });
      expect(c.totals.sha256).not.toBe(a.totals.sha256);
    }
    const { into } = await unpack((await pack(first, { compression: "none", reproducible: true })).bytes, {
      compression: "none",
    });
    expect((await stat(join(into, "d/e/f"))).mtime.toISOString()).toBe("2020-01-01T00:00:00.000Z");
  });
});

describe("unpackArchive refuses damaged archives", () => {
  let archive: Buffer;
  const archiveOf = async () => {
    if (archive) return archive;
    const root = await freshDir("tree");
    await writeFile(join(root, "data"), randomBytes(300_000));
    archive = (await pack(root, { compression: "zstd" })).bytes;
    return archive;
  };

  it("fails with ArchiveIntegrityError on a checksum mismatch, after reading everything", async () => {
    const bytes = await archiveOf();
    let read = 0;
    async function* counting() {
      for await (const chunk of streamOf(bytes)) {
        read += chunk.byteLength;
        yield chunk;
      }
    }
    const into = await freshDir("into");
    await expect(
      unpackArchive(counting(), into, { compression: "zstd", expectedSha256: "0".repeat(64) }),
    ).rejects.toThrow(ArchiveIntegrityError);
    expect(read).toBe(bytes.length);
  });

  it("fails with ArchiveIntegrityError on a size mismatch", async () => {
    const bytes = await archiveOf();
    const error = await unpack(bytes, { compression: "zstd", expectedBytes: bytes.length + 1 }).catch((e) => e);
    expect(error).toBeInstanceOf(ArchiveIntegrityError);
    expect(error.message).toContain(`${bytes.length} bytes`);
  });

  for (const zstdBackend of ["program", "zlib"] as const) {
    it(`tells a truncated archive from an intact but corrupt one (${zstdBackend})`, async () => {
      const bytes = await archiveOf();
      const truncated = bytes.subarray(0, Math.floor(bytes.length / 2));
      await expect(
        unpack(truncated, { compression: "zstd", zstdBackend, expectedSha256: sha256(bytes) }),
      ).rejects.toThrow(ArchiveIntegrityError);
      // The checksum of the truncated bytes matches: the archive is what was meant, and invalid.
      await expect(unpack(truncated, { compression: "zstd", zstdBackend })).rejects.toThrow(InvalidArchiveError);
    });
  }

  for (const compression of ["zstd", "gzip", "none"] as const) {
    it(`fails with InvalidArchiveError on garbage (${compression})`, async () => {
      const garbage = randomBytes(100_000);
      await expect(unpack(garbage, { compression })).rejects.toThrow(InvalidArchiveError);
      await expect(unpack(garbage, { compression, expectedSha256: "f".repeat(64) })).rejects.toThrow(
        ArchiveIntegrityError,
      );
    });
  }

  it("refuses a directory that is not empty", async () => {
    const into = await freshDir("into");
    await writeFile(join(into, "x"), "");
    const bytes = await archiveOf();
    await expect(
      unpackArchive(streamOf(bytes), into, { compression: "zstd", expectedSha256: sha256(bytes) }),
    ).rejects.toThrow(/not empty/);
  });
});

/** One member of a hand-made tar archive. */
interface Member {
  name: string;
  /** "0" file, "1" hard link, "2" symlink, "3" character device, "5" directory. */
  type: "0" | "1" | "2" | "3" | "5";
  linkname?: string;
  content?: string;
  mode?: number;
}

/** A ustar archive written header by header, so that it can say what GNU tar would never write. */
function handMadeTar(members: Member[]): Buffer {
  const octal = (header: Buffer, offset: number, length: number, value: number) =>
    header.write(`${value.toString(8).padStart(length - 1, "0")}\0`, offset, length, "ascii");
  const blocks: Buffer[] = [];
  for (const member of members) {
    const content = Buffer.from(member.content ?? "");
    const header = Buffer.alloc(512);
    header.write(member.name, 0, 100);
    octal(header, 100, 8, member.mode ?? (member.type === "5" ? 0o755 : 0o644));
    octal(header, 108, 8, 0);
    octal(header, 116, 8, 0);
    octal(header, 124, 12, content.length);
    octal(header, 136, 12, 1_600_000_000);
    header.fill(" ", 148, 156);
    header.write(member.type, 156);
    header.write(member.linkname ?? "", 157, 100);
    header.write("ustar\0" + "00", 257);
    octal(header, 329, 8, member.type === "3" ? 1 : 0);
    octal(header, 337, 8, member.type === "3" ? 3 : 0);
    const sum = header.reduce((total, byte) => total + byte, 0);
    header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "ascii");
    blocks.push(header, content, Buffer.alloc((512 - (content.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

describe("unpackArchive keeps every entry inside the target", () => {
  /** A target directory with an empty sibling `outside`, where escapes would land. */
  async function arena(): Promise<{ into: string; outside: string; parent: string }> {
    const parent = await freshDir("arena");
    await mkdir(join(parent, "into"));
    await mkdir(join(parent, "outside"));
    return { into: join(parent, "into"), outside: join(parent, "outside"), parent };
  }

  async function refuses(bytes: Buffer, into: string): Promise<InvalidArchiveError> {
    const error = await unpackArchive(streamOf(bytes), into, {
      compression: "none",
      expectedSha256: sha256(bytes),
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidArchiveError);
    return error as InvalidArchiveError;
  }

  it("refuses absolute names (made by GNU tar with --absolute-names)", async () => {
    const { into, outside } = await arena();
    const source = join(outside, "planted");
    await writeFile(source, "planted");
    const bytes = execFileSync("tar", ["-c", "-f", "-", "--absolute-names", source], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    await rm(source);
    const error = await refuses(bytes, into);
    expect(error.message).toContain("Removing leading");
    expect(await readdir(outside)).toEqual([]);
  });

  it("refuses names with .. (made by GNU tar with --transform)", async () => {
    const { into, outside, parent } = await arena();
    const work = await freshDir("work");
    await writeFile(join(work, "f"), "escaped");
    const bytes = execFileSync("tar", ["-c", "-f", "-", "-C", work, "--transform=s,^,../outside/,", "f"], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    const listing = execFileSync("tar", ["-t", "-f", "-"], { input: bytes, stdio: ["pipe", "pipe", "ignore"] });
    expect(listing.toString()).toBe("../outside/f\n");
    await refuses(bytes, into);
    expect(await readdir(outside)).toEqual([]);
    await refuses(handMadeTar([{ name: "a/../../outside/g", type: "0", content: "escaped" }]), join(parent, "into"));
    expect(await readdir(outside)).toEqual([]);
  });

  for (const [label, target] of [
    ["a relative symlink", "../outside"],
    ["an absolute symlink", "OUTSIDE"],
  ] as const) {
    it(`writes nothing through ${label} that leads out`, async () => {
      const { into, outside } = await arena();
      const linkTarget = target === "OUTSIDE" ? outside : target;
      const bytes = handMadeTar([
        { name: "a", type: "2", linkname: linkTarget },
        { name: "a/file", type: "0", content: "written through the link" },
        { name: "b", type: "2", linkname: linkTarget },
        { name: "b/", type: "5" },
        { name: "b/inner", type: "0", content: "written through the link" },
      ]);
      await refuses(bytes, into);
      expect(await readdir(outside)).toEqual([]);
    });
  }

  it("refuses hard links to files outside", async () => {
    const passwd = await stat("/etc/passwd");
    const passwdText = await readFile("/etc/passwd", "utf8");
    for (const linkname of ["/etc/passwd", "../../../../../../../../etc/passwd"]) {
      const { into } = await arena();
      await refuses(handMadeTar([{ name: "h", type: "1", linkname }]), into);
      const { stdout } = await execFileAsync("find", [into, "-samefile", "/etc/passwd"]);
      expect(stdout).toBe("");
    }
    const after = await stat("/etc/passwd");
    expect([after.ino, after.nlink, after.mtimeMs]).toEqual([passwd.ino, passwd.nlink, passwd.mtimeMs]);
    expect(await readFile("/etc/passwd", "utf8")).toBe(passwdText);
  });

  it("refuses devices", async () => {
    const { into } = await arena();
    const error = await refuses(handMadeTar([{ name: "null", type: "3", mode: 0o666 }]), into);
    expect(error.message).toMatch(/not a file, a directory or a symlink|mknod|Cannot/);
  });

  it("accepts links that stay inside", async () => {
    const { into } = await arena();
    const bytes = handMadeTar([
      { name: "d/", type: "5" },
      { name: "d/f", type: "0", content: "inside" },
      { name: "l", type: "2", linkname: "d" },
      { name: "l/g", type: "0", content: "through a link inside" },
      { name: "h", type: "1", linkname: "d/f" },
    ]);
    const totals = await unpackArchive(streamOf(bytes), into, { compression: "none", expectedSha256: sha256(bytes) });
    expect(totals).toMatchObject({ fileCount: 3, directoryCount: 1, symlinkCount: 1 });
    expect(await readFile(join(into, "d/g"), "utf8")).toBe("through a link inside");
    expect((await stat(join(into, "h"))).ino).toBe((await stat(join(into, "d/f"))).ino);
  });
});

/** The processes whose parent is this one (zombies included). */
function children(): string[] {
  try {
    return execFileSync("ps", ["-o", "pid=,stat=,comm=", "--ppid", String(process.pid)])
      .toString()
      .trim()
      .split("\n")
      .filter((line) => line && !/\bps$/.test(line));
  } catch {
    return []; // ps exits 1 when it lists nothing
  }
}

describe("stopping a pack", () => {
  const bigTree = async () => {
    const root = await freshDir("big");
    for (let i = 0; i < 8; i++) await writeFile(join(root, `f${i}`), randomBytes(2 * 1024 * 1024));
    return root;
  };

  for (const compression of ["zstd", "gzip", "none"] as const) {
    it(`kills tar and the compressor when aborted (${compression})`, async () => {
      const root = await bigTree();
      const abort = new AbortController();
      const packed = packDirectory(root, { compression, signal: abort.signal });
      const iterator = packed.chunks[Symbol.asyncIterator]();
      await iterator.next();
      expect(children().length).toBeGreaterThan(0);
      abort.abort(new Error("stop"));
      await expect(
        (async () => {
          for (;;) if ((await iterator.next()).done) return;
        })(),
      ).rejects.toThrow("stop");
      await expect(packed.totals).rejects.toThrow("stop");
      expect(children()).toEqual([]);
    });
  }

  it("kills tar and the compressor when the reader stops early", async () => {
    const root = await bigTree();
    const packed = packDirectory(root, { compression: "zstd" });
    for await (const _ of packed.chunks) break;
    await expect(packed.totals).rejects.toThrow(/not read to its end/);
    expect(children()).toEqual([]);
  });

  it("starts nothing until the chunks are read", async () => {
    const root = await bigTree();
    packDirectory(root, { compression: "zstd" });
    expect(children()).toEqual([]);
  });
});
