import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { connect as connectHttp2 } from "node:http2";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import {
  DownloadRequestSchema,
  type DownloadResponse,
  DownloadResponseSchema,
  EntryType,
  FilesystemService,
  type UploadRequestSchema,
  type WatchEvent,
  WatchEventType,
  WatchRequestSchema,
  type WatchResponse,
} from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Resolver } from "../src/filesystem/resolver.js";
import { startWatch } from "../src/filesystem/watch.js";
import { codeOf, startTestRunner, type TestRunner } from "./harness.js";

type FsClient = Client<typeof FilesystemService>;
type UploadInit = MessageInitShape<typeof UploadRequestSchema>;
type WatchInit = MessageInitShape<typeof WatchRequestSchema>;

let t: TestRunner;
let client: FsClient;
let dirCount = 0;

beforeAll(async () => {
  t = await startTestRunner(["--keepalive-ms", "300"]);
  client = await t.client(FilesystemService);
});
afterAll(async () => {
  await t.close();
});

const text = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fresh directory in the workspace for one test; returns its workspace-relative path. */
function fresh(): string {
  const rel = `t${++dirCount}`;
  fs.mkdirSync(join(t.workspace, rel));
  return rel;
}
const abs = (rel: string) => join(t.workspace, rel);

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await sleep(10);
  }
}

/** Names of temporary files a write or copy leaves behind (there must be none). */
function leftovers(dir: string): string[] {
  return fs.readdirSync(abs(dir)).filter((name) => name.startsWith(".devex-"));
}

describe("Stat", () => {
  it("describes a file: type, size, mode, modification time, version", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/a.txt`), "hello");
    fs.chmodSync(abs(`${dir}/a.txt`), 0o640);
    const { entry } = await client.stat({ path: `${dir}/a.txt` });
    const disk = fs.statSync(abs(`${dir}/a.txt`));
    expect(entry?.name).toBe("a.txt");
    expect(entry?.path).toBe(`${dir}/a.txt`);
    expect(entry?.type).toBe(EntryType.FILE);
    expect(entry?.sizeBytes).toBe(5n);
    expect(entry?.mode).toBe(0o640);
    const modifiedMs = entry?.modifiedAt ? timestampMs(entry.modifiedAt) : 0;
    expect(Math.abs(modifiedMs - disk.mtimeMs)).toBeLessThan(1);
    expect(entry?.version).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  it("describes the root as '.', directories, and absolute paths inside the workspace", async () => {
    const dir = fresh();
    const root = await client.stat({ path: "." });
    expect(root.entry).toMatchObject({ name: ".", path: ".", type: EntryType.DIRECTORY, version: "" });
    const viaAbsolute = await client.stat({ path: abs(dir) });
    expect(viaAbsolute.entry).toMatchObject({ name: dir, path: dir, type: EntryType.DIRECTORY });
    const viaDots = await client.stat({ path: `./${dir}/../${dir}/.` });
    expect(viaDots.entry?.path).toBe(dir);
  });

  it("describes a symlink itself, or its target with follow_symlinks", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/target.txt`), "1234567");
    fs.symlinkSync("target.txt", abs(`${dir}/link`));
    fs.symlinkSync("nowhere", abs(`${dir}/dangling`));
    const link = await client.stat({ path: `${dir}/link` });
    expect(link.entry).toMatchObject({
      type: EntryType.SYMLINK,
      symlinkTarget: "target.txt",
      symlinkTargetType: EntryType.FILE,
      sizeBytes: BigInt("target.txt".length),
      version: "",
    });
    const followed = await client.stat({ path: `${dir}/link`, followSymlinks: true });
    expect(followed.entry).toMatchObject({ type: EntryType.FILE, path: `${dir}/target.txt`, sizeBytes: 7n });
    const dangling = await client.stat({ path: `${dir}/dangling` });
    expect(dangling.entry?.symlinkTargetType).toBe(EntryType.UNSPECIFIED);
    expect(await codeOf(() => client.stat({ path: `${dir}/dangling`, followSymlinks: true }))).toBe(Code.NotFound);
  });

  it("fails with NOT_FOUND for a missing entry or a missing parent", async () => {
    const dir = fresh();
    expect(await codeOf(() => client.stat({ path: `${dir}/missing` }))).toBe(Code.NotFound);
    expect(await codeOf(() => client.stat({ path: `${dir}/missing/deeper` }))).toBe(Code.NotFound);
  });
});

describe("ListDirectory", () => {
  it("lists one level in bytewise order, hiding dot entries unless asked", async () => {
    const dir = fresh();
    for (const name of ["b", "a", "B", "é", "_x", ".hidden", "Z"]) fs.writeFileSync(abs(`${dir}/${name}`), name);
    const { entries, nextPageToken } = await client.listDirectory({ path: dir });
    expect(entries.map((e) => e.name)).toEqual(["B", "Z", "_x", "a", "b", "é"]);
    expect(entries.map((e) => e.path)).toEqual(["B", "Z", "_x", "a", "b", "é"].map((n) => `${dir}/${n}`));
    expect(nextPageToken).toBe("");
    const all = await client.listDirectory({ path: dir, includeHidden: true });
    expect(all.entries.map((e) => e.name)).toEqual([".hidden", "B", "Z", "_x", "a", "b", "é"]);
  });

  it("lists to a depth in pre-order, with types, sizes and modes, never following symlinks", async () => {
    const dir = fresh();
    fs.mkdirSync(abs(`${dir}/src/deep/deeper`), { recursive: true });
    fs.mkdirSync(abs(`${dir}/.git`));
    fs.writeFileSync(abs(`${dir}/.git/HEAD`), "ref");
    fs.writeFileSync(abs(`${dir}/src/main.ts`), "main");
    fs.writeFileSync(abs(`${dir}/src/deep/x.ts`), "x");
    fs.writeFileSync(abs(`${dir}/src/deep/deeper/y.ts`), "y");
    fs.writeFileSync(abs(`${dir}/README`), "readme!");
    fs.chmodSync(abs(`${dir}/README`), 0o600);
    fs.symlinkSync("src", abs(`${dir}/src-link`));

    const two = await client.listDirectory({ path: dir, depth: 2 });
    expect(two.entries.map((e) => e.path.slice(dir.length + 1))).toEqual([
      "README",
      "src",
      "src/deep",
      "src/main.ts",
      "src-link",
    ]);
    const readme = two.entries[0];
    expect(readme).toMatchObject({ type: EntryType.FILE, sizeBytes: 7n, mode: 0o600 });
    expect(readme?.version).not.toBe("");
    expect(two.entries[1]?.type).toBe(EntryType.DIRECTORY);
    expect(two.entries[4]).toMatchObject({
      type: EntryType.SYMLINK,
      symlinkTarget: "src",
      symlinkTargetType: EntryType.DIRECTORY,
    });

    const deep = await client.listDirectory({ path: dir, depth: 64, includeHidden: true });
    const paths = deep.entries.map((e) => e.path.slice(dir.length + 1));
    expect(paths).toEqual([
      ".git",
      ".git/HEAD",
      "README",
      "src",
      "src/deep",
      "src/deep/deeper",
      "src/deep/deeper/y.ts",
      "src/deep/x.ts",
      "src/main.ts",
      "src-link",
    ]);
    expect(paths.some((p) => p.startsWith("src-link/"))).toBe(false);
  });

  it("pages with tokens: pages join up to the full listing, and entries added meanwhile neither repeat nor skip", async () => {
    const dir = fresh();
    for (let i = 0; i < 25; i++) fs.writeFileSync(abs(`${dir}/f${String(i).padStart(2, "0")}`), "");
    fs.mkdirSync(abs(`${dir}/sub`));
    for (let i = 0; i < 5; i++) fs.writeFileSync(abs(`${dir}/sub/s${i}`), "");
    const full = (await client.listDirectory({ path: dir, depth: 2 })).entries.map((e) => e.path);
    expect(full).toHaveLength(31);

    const paged: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await client.listDirectory({ path: dir, depth: 2, pageSize: 7, pageToken: token });
      expect(page.entries.length).toBeLessThanOrEqual(7);
      paged.push(...page.entries.map((e) => e.path));
      token = page.nextPageToken;
      if (pages++ === 1) {
        // Between pages: one entry before the cursor and one after it.
        fs.writeFileSync(abs(`${dir}/a-early`), "");
        fs.writeFileSync(abs(`${dir}/z-late`), "");
      }
    } while (token !== "");
    expect(pages).toBe(5);
    expect(paged).toEqual([...full, `${dir}/z-late`]);
  });

  it("uses a default page size of 100 and refuses tokens from other requests", async () => {
    const dir = fresh();
    for (let i = 0; i < 150; i++) fs.writeFileSync(abs(`${dir}/f${String(i).padStart(3, "0")}`), "");
    const first = await client.listDirectory({ path: dir });
    expect(first.entries).toHaveLength(100);
    expect(first.nextPageToken).not.toBe("");
    const second = await client.listDirectory({ path: dir, pageToken: first.nextPageToken });
    expect(second.entries).toHaveLength(50);
    expect(second.entries[0]?.name).toBe("f100");
    const other = fresh();
    expect(await codeOf(() => client.listDirectory({ path: other, pageToken: first.nextPageToken }))).toBe(
      Code.InvalidArgument,
    );
    expect(await codeOf(() => client.listDirectory({ path: dir, depth: 2, pageToken: first.nextPageToken }))).toBe(
      Code.InvalidArgument,
    );
    expect(await codeOf(() => client.listDirectory({ path: dir, pageToken: "bm9wZQ" }))).toBe(Code.InvalidArgument);
  });

  it("keeps page tokens within 1,024 characters for very deep paths", async () => {
    const dir = fresh();
    const long = "n".repeat(250);
    const deep = `${dir}/${long}/${long}/${long}/${long}`;
    fs.mkdirSync(abs(deep), { recursive: true });
    for (let i = 0; i < 3; i++) fs.writeFileSync(abs(`${deep}/${i}`), "");
    const seen: string[] = [];
    let token = "";
    do {
      const page = await client.listDirectory({ path: dir, depth: 6, pageSize: 2, pageToken: token });
      expect(page.nextPageToken.length).toBeLessThanOrEqual(1024);
      seen.push(...page.entries.map((e) => e.path));
      token = page.nextPageToken;
    } while (token !== "");
    expect(seen).toHaveLength(7);
    expect(seen.at(-1)).toBe(`${deep}/2`);
  });
});

describe("ReadFile", () => {
  it("reads a whole file or a range, with the version of what was read", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/f`), "0123456789");
    const whole = await client.readFile({ path: `${dir}/f` });
    expect(decode(whole.content)).toBe("0123456789");
    expect(whole).toMatchObject({ offset: 0n, eof: true });
    expect(whole.entry?.version).toBe((await client.stat({ path: `${dir}/f` })).entry?.version);
    const range = await client.readFile({ path: `${dir}/f`, offset: 2n, lengthBytes: 3n });
    expect(decode(range.content)).toBe("234");
    expect(range).toMatchObject({ offset: 2n, eof: false });
    const tail = await client.readFile({ path: `${dir}/f`, offset: 8n, lengthBytes: 100n });
    expect(decode(tail.content)).toBe("89");
    expect(tail.eof).toBe(true);
    const atEnd = await client.readFile({ path: `${dir}/f`, offset: 10n });
    expect(atEnd.content).toHaveLength(0);
    expect(atEnd.eof).toBe(true);
    expect(await codeOf(() => client.readFile({ path: `${dir}/f`, offset: 11n }))).toBe(Code.OutOfRange);
  });

  it("refuses a whole file over 4 MiB but reads a range of it", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/big`), Buffer.alloc(4 * 1024 * 1024 + 1, 1));
    expect(await codeOf(() => client.readFile({ path: `${dir}/big` }))).toBe(Code.FailedPrecondition);
    const range = await client.readFile({ path: `${dir}/big`, offset: 1n, lengthBytes: 4_194_304n });
    expect(range.content.byteLength).toBe(4_194_304);
    expect(range.eof).toBe(true);
    expect(range.entry?.sizeBytes).toBe(4_194_305n);
  });
});

describe("WriteFile", () => {
  it("creates a file (0644 by default), then replaces it atomically with a new inode", async () => {
    const dir = fresh();
    const created = await client.writeFile({ path: `${dir}/f.txt`, content: text("one") });
    expect(created.created).toBe(true);
    expect(created.entry).toMatchObject({ path: `${dir}/f.txt`, type: EntryType.FILE, sizeBytes: 3n, mode: 0o644 });
    const inode = fs.statSync(abs(`${dir}/f.txt`)).ino;
    const replaced = await client.writeFile({ path: `${dir}/f.txt`, content: text("two!") });
    expect(replaced.created).toBe(false);
    expect(fs.readFileSync(abs(`${dir}/f.txt`), "utf8")).toBe("two!");
    expect(fs.statSync(abs(`${dir}/f.txt`)).ino).not.toBe(inode);
    expect(leftovers(dir)).toEqual([]);
  });

  it("appends parts in order with expected_version, to an existing file only, never through a link out", async () => {
    const dir = fresh();
    const first = await client.writeFile({ path: `${dir}/parts.bin`, content: text("one-") });
    const inode = fs.statSync(abs(`${dir}/parts.bin`)).ino;
    const second = await client.writeFile({
      path: `${dir}/parts.bin`,
      content: text("two-"),
      append: true,
      condition: { case: "expectedVersion", value: first.entry?.version ?? "" },
    });
    expect(second).toMatchObject({ created: false, entry: { sizeBytes: 8n } });
    // The same part again, against the version it was meant for, is refused: nothing is appended twice.
    expect(
      await codeOf(() =>
        client.writeFile({
          path: `${dir}/parts.bin`,
          content: text("two-"),
          append: true,
          condition: { case: "expectedVersion", value: first.entry?.version ?? "" },
        }),
      ),
    ).toBe(Code.FailedPrecondition);
    await client.writeFile({ path: `${dir}/parts.bin`, content: text("three"), append: true });
    expect(fs.readFileSync(abs(`${dir}/parts.bin`), "utf8")).toBe("one-two-three");
    expect(fs.statSync(abs(`${dir}/parts.bin`)).ino).toBe(inode);

    expect(await codeOf(() => client.writeFile({ path: `${dir}/missing`, content: text("x"), append: true }))).toBe(
      Code.NotFound,
    );
    expect(await codeOf(() => client.writeFile({ path: dir, content: text("x"), append: true }))).toBe(
      Code.FailedPrecondition,
    );
    expect(
      await codeOf(() => client.writeFile({ path: `${dir}/parts.bin`, content: text("x"), append: true, mode: 0o600 })),
    ).toBe(Code.InvalidArgument);
    fs.symlinkSync("/etc/hostname", abs(`${dir}/out`));
    const before = fs.readFileSync("/etc/hostname", "utf8");
    expect(await codeOf(() => client.writeFile({ path: `${dir}/out`, content: text("x"), append: true }))).toBe(
      Code.PermissionDenied,
    );
    expect(fs.readFileSync("/etc/hostname", "utf8")).toBe(before);
  });

  it("sets an explicit mode exactly, and keeps an existing file's mode when mode is 0", async () => {
    const dir = fresh();
    await client.writeFile({ path: `${dir}/secret`, content: text("s"), mode: 0o600 });
    expect(fs.statSync(abs(`${dir}/secret`)).mode & 0o7777).toBe(0o600);
    await client.writeFile({ path: `${dir}/script`, content: text("#!/bin/sh"), mode: 0o4755 });
    expect(fs.statSync(abs(`${dir}/script`)).mode & 0o7777).toBe(0o4755);
    fs.chmodSync(abs(`${dir}/script`), 0o750);
    await client.writeFile({ path: `${dir}/script`, content: text("#!/bin/bash") });
    expect(fs.statSync(abs(`${dir}/script`)).mode & 0o7777).toBe(0o750);
  });

  it("creates parents only when asked", async () => {
    const dir = fresh();
    expect(await codeOf(() => client.writeFile({ path: `${dir}/a/b/c.txt`, content: text("x") }))).toBe(Code.NotFound);
    expect(fs.existsSync(abs(`${dir}/a`))).toBe(false);
    const res = await client.writeFile({ path: `${dir}/a/b/c.txt`, content: text("x"), createParents: true });
    expect(res.entry?.path).toBe(`${dir}/a/b/c.txt`);
    expect(fs.statSync(abs(`${dir}/a/b`)).isDirectory()).toBe(true);
  });

  it("writes conditionally on expected_version: FAILED_PRECONDITION after a change, NOT_FOUND when gone", async () => {
    const dir = fresh();
    const first = await client.writeFile({ path: `${dir}/f`, content: text("v1") });
    const v1 = first.entry?.version as string;
    const second = await client.writeFile({
      path: `${dir}/f`,
      content: text("v2"),
      condition: { case: "expectedVersion", value: v1 },
    });
    expect(second.entry?.version).not.toBe(v1);
    // Someone else (an editor, a formatter) changes the file in place.
    fs.writeFileSync(abs(`${dir}/f`), "v3");
    const stale = await codeOf(() =>
      client.writeFile({
        path: `${dir}/f`,
        content: text("v2 again"),
        condition: { case: "expectedVersion", value: second.entry?.version as string },
      }),
    );
    expect(stale).toBe(Code.FailedPrecondition);
    expect(fs.readFileSync(abs(`${dir}/f`), "utf8")).toBe("v3");
    fs.unlinkSync(abs(`${dir}/f`));
    const gone = await codeOf(() =>
      client.writeFile({ path: `${dir}/f`, content: text("x"), condition: { case: "expectedVersion", value: v1 } }),
    );
    expect(gone).toBe(Code.NotFound);
    expect(leftovers(dir)).toEqual([]);
  });

  it("creates only with must_not_exist, refusing anything there (even a dangling symlink)", async () => {
    const dir = fresh();
    const made = await client.writeFile({
      path: `${dir}/new`,
      content: text("a"),
      condition: { case: "mustNotExist", value: true },
    });
    expect(made.created).toBe(true);
    const again = await codeOf(() =>
      client.writeFile({ path: `${dir}/new`, content: text("b"), condition: { case: "mustNotExist", value: true } }),
    );
    expect(again).toBe(Code.AlreadyExists);
    expect(fs.readFileSync(abs(`${dir}/new`), "utf8")).toBe("a");
    fs.symlinkSync("nothing-here", abs(`${dir}/dangling`));
    const throughLink = await codeOf(() =>
      client.writeFile({
        path: `${dir}/dangling`,
        content: text("c"),
        condition: { case: "mustNotExist", value: true },
      }),
    );
    expect(throughLink).toBe(Code.AlreadyExists);
    expect(fs.existsSync(abs(`${dir}/nothing-here`))).toBe(false);
  });

  it("changes the version on every content change, even same-size changes in quick succession", async () => {
    const dir = fresh();
    const versions = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const res = await client.writeFile({ path: `${dir}/f`, content: text(`content ${i % 10}${i % 7}`) });
      versions.add(res.entry?.version as string);
    }
    expect(versions.size).toBe(40);
    // In-place writes by another program (same size, same inode) move the version too.
    const inPlace = new Set<string>();
    for (let i = 0; i < 20; i++) {
      fs.writeFileSync(abs(`${dir}/f`), `in place ${String(i).padStart(2, "0")}`);
      inPlace.add((await client.stat({ path: `${dir}/f` })).entry?.version as string);
    }
    expect(inPlace.size).toBe(20);
    // Reading does not change it.
    const a = (await client.readFile({ path: `${dir}/f` })).entry?.version;
    const b = (await client.stat({ path: `${dir}/f` })).entry?.version;
    expect(a).toBe(b);
  });

  it("writes through a symlink to its target inside the workspace, keeping the link", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/real.txt`), "old");
    fs.symlinkSync("real.txt", abs(`${dir}/link`));
    const res = await client.writeFile({ path: `${dir}/link`, content: text("new") });
    expect(res.entry?.path).toBe(`${dir}/real.txt`);
    expect(fs.lstatSync(abs(`${dir}/link`)).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(abs(`${dir}/real.txt`), "utf8")).toBe("new");
  });

  it("counts a write as activity", async () => {
    const dir = fresh();
    const before = t.runner.context.activity.lastActivityAt.getTime();
    await sleep(15);
    await client.writeFile({ path: `${dir}/f`, content: text("x") });
    expect(t.runner.context.activity.lastActivityAt.getTime()).toBeGreaterThan(before);
  });
});

describe("MakeDirectory", () => {
  it("creates a directory; ALREADY_EXISTS unless parents is set and it is a directory", async () => {
    const dir = fresh();
    const made = await client.makeDirectory({ path: `${dir}/d` });
    expect(made).toMatchObject({ created: true, entry: { path: `${dir}/d`, type: EntryType.DIRECTORY } });
    expect(fs.statSync(abs(`${dir}/d`)).mode & 0o7777).toBe(0o755);
    expect(await codeOf(() => client.makeDirectory({ path: `${dir}/d` }))).toBe(Code.AlreadyExists);
    const again = await client.makeDirectory({ path: `${dir}/d`, parents: true });
    expect(again.created).toBe(false);
    expect(await codeOf(() => client.makeDirectory({ path: `${dir}/x/y` }))).toBe(Code.NotFound);
    const chain = await client.makeDirectory({ path: `${dir}/x/y/z`, parents: true, mode: 0o700 });
    expect(chain.created).toBe(true);
    expect(fs.statSync(abs(`${dir}/x/y/z`)).mode & 0o7777).toBe(0o700);
    expect(fs.statSync(abs(`${dir}/x/y`)).isDirectory()).toBe(true);
    const slash = await client.makeDirectory({ path: `${dir}/with-slash/` });
    expect(slash.entry?.path).toBe(`${dir}/with-slash`);
  });
});

describe("Move", () => {
  it("renames files and directories, creating parents on request", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/a`), "a");
    const moved = await client.move({ sourcePath: `${dir}/a`, destinationPath: `${dir}/b` });
    expect(moved.entry).toMatchObject({ path: `${dir}/b`, type: EntryType.FILE });
    expect(fs.existsSync(abs(`${dir}/a`))).toBe(false);
    fs.mkdirSync(abs(`${dir}/tree/sub`), { recursive: true });
    fs.writeFileSync(abs(`${dir}/tree/sub/f`), "f");
    await client.move({ sourcePath: `${dir}/tree`, destinationPath: `${dir}/new/place/tree`, createParents: true });
    expect(fs.readFileSync(abs(`${dir}/new/place/tree/sub/f`), "utf8")).toBe("f");
  });

  it("replaces only with overwrite, and never a non-empty directory or an object of the other kind", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/a`), "a");
    fs.writeFileSync(abs(`${dir}/b`), "b");
    fs.mkdirSync(abs(`${dir}/full`));
    fs.writeFileSync(abs(`${dir}/full/x`), "x");
    fs.mkdirSync(abs(`${dir}/empty`));
    fs.mkdirSync(abs(`${dir}/d`));
    const move =
      (s: string, d: string, overwrite = false) =>
      () =>
        client.move({ sourcePath: `${dir}/${s}`, destinationPath: `${dir}/${d}`, overwrite });
    expect(await codeOf(move("a", "b"))).toBe(Code.AlreadyExists);
    expect(fs.readFileSync(abs(`${dir}/b`), "utf8")).toBe("b");
    expect(await codeOf(move("a", "b", true))).toBe("ok");
    expect(fs.readFileSync(abs(`${dir}/b`), "utf8")).toBe("a");
    expect(await codeOf(move("d", "full", true))).toBe(Code.FailedPrecondition);
    expect(await codeOf(move("d", "b", true))).toBe(Code.FailedPrecondition);
    expect(await codeOf(move("b", "empty", true))).toBe(Code.FailedPrecondition);
    expect(await codeOf(move("d", "empty", true))).toBe("ok");
    expect(await codeOf(move("empty", "empty/inside"))).toBe(Code.FailedPrecondition);
    expect(await codeOf(move("missing", "x"))).toBe(Code.NotFound);
  });

  it("moves a symlink itself, not its target", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/target`), "t");
    fs.symlinkSync("target", abs(`${dir}/link`));
    const res = await client.move({ sourcePath: `${dir}/link`, destinationPath: `${dir}/link2` });
    expect(res.entry).toMatchObject({ type: EntryType.SYMLINK, symlinkTarget: "target" });
    expect(fs.readFileSync(abs(`${dir}/target`), "utf8")).toBe("t");
  });
});

describe("Copy", () => {
  it("copies a file with its mode; a directory only with recursive", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/run.sh`), "#!/bin/sh\necho hi\n");
    fs.chmodSync(abs(`${dir}/run.sh`), 0o751);
    const res = await client.copy({ sourcePath: `${dir}/run.sh`, destinationPath: `${dir}/copy.sh` });
    expect(res).toMatchObject({ fileCount: 1n, copiedBytes: 18n, entry: { path: `${dir}/copy.sh`, mode: 0o751 } });
    expect(fs.readFileSync(abs(`${dir}/copy.sh`), "utf8")).toBe("#!/bin/sh\necho hi\n");
    fs.mkdirSync(abs(`${dir}/d`));
    expect(await codeOf(() => client.copy({ sourcePath: `${dir}/d`, destinationPath: `${dir}/e` }))).toBe(
      Code.FailedPrecondition,
    );
  });

  it("copies a tree recursively: contents, modes, symlinks as symlinks; merges into an existing one with overwrite", async () => {
    const dir = fresh();
    fs.mkdirSync(abs(`${dir}/src/lib`), { recursive: true });
    fs.writeFileSync(abs(`${dir}/src/a.txt`), "aaa");
    fs.writeFileSync(abs(`${dir}/src/lib/b.txt`), "bb");
    fs.chmodSync(abs(`${dir}/src/lib`), 0o750);
    fs.symlinkSync("../a.txt", abs(`${dir}/src/lib/to-a`));
    const res = await client.copy({ sourcePath: `${dir}/src`, destinationPath: `${dir}/dst`, recursive: true });
    expect(res.fileCount).toBe(3n);
    expect(res.copiedBytes).toBe(5n);
    expect(fs.readFileSync(abs(`${dir}/dst/lib/b.txt`), "utf8")).toBe("bb");
    expect(fs.statSync(abs(`${dir}/dst/lib`)).mode & 0o7777).toBe(0o750);
    expect(fs.readlinkSync(abs(`${dir}/dst/lib/to-a`))).toBe("../a.txt");
    expect(fs.readFileSync(abs(`${dir}/dst/lib/to-a`), "utf8")).toBe("aaa");

    expect(
      await codeOf(() => client.copy({ sourcePath: `${dir}/src`, destinationPath: `${dir}/dst`, recursive: true })),
    ).toBe(Code.AlreadyExists);
    fs.writeFileSync(abs(`${dir}/src/a.txt`), "AAA");
    fs.writeFileSync(abs(`${dir}/dst/only-in-dst`), "keep");
    await client.copy({ sourcePath: `${dir}/src`, destinationPath: `${dir}/dst`, recursive: true, overwrite: true });
    expect(fs.readFileSync(abs(`${dir}/dst/a.txt`), "utf8")).toBe("AAA");
    expect(fs.readFileSync(abs(`${dir}/dst/only-in-dst`), "utf8")).toBe("keep");
    expect(
      await codeOf(() =>
        client.copy({ sourcePath: `${dir}/src`, destinationPath: `${dir}/src/lib/x`, recursive: true }),
      ),
    ).toBe(Code.FailedPrecondition);
    expect(leftovers(dir)).toEqual([]);
    expect(leftovers(`${dir}/dst`)).toEqual([]);
  });
});

describe("Remove", () => {
  it("removes files, symlinks (not their targets) and empty directories", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/f`), "");
    fs.symlinkSync("f", abs(`${dir}/link`));
    fs.mkdirSync(abs(`${dir}/empty`));
    expect((await client.remove({ path: `${dir}/link` })).removedCount).toBe(1n);
    expect(fs.existsSync(abs(`${dir}/f`))).toBe(true);
    expect((await client.remove({ path: `${dir}/f` })).removedCount).toBe(1n);
    expect((await client.remove({ path: `${dir}/empty` })).removedCount).toBe(1n);
    expect(fs.readdirSync(abs(dir))).toEqual([]);
  });

  it("removes a non-empty directory only with recursive, counting every entry", async () => {
    const dir = fresh();
    fs.mkdirSync(abs(`${dir}/tree/a/b`), { recursive: true });
    fs.writeFileSync(abs(`${dir}/tree/a/b/f1`), "");
    fs.writeFileSync(abs(`${dir}/tree/f2`), "");
    fs.symlinkSync("/etc", abs(`${dir}/tree/etc-link`));
    expect(await codeOf(() => client.remove({ path: `${dir}/tree` }))).toBe(Code.FailedPrecondition);
    expect(fs.existsSync(abs(`${dir}/tree/a/b/f1`))).toBe(true);
    const res = await client.remove({ path: `${dir}/tree`, recursive: true });
    expect(res.removedCount).toBe(6n);
    expect(fs.existsSync(abs(`${dir}/tree`))).toBe(false);
    expect(fs.existsSync("/etc/hostname") || fs.existsSync("/etc/passwd")).toBe(true);
  });

  it("fails with NOT_FOUND for a missing path unless missing_ok", async () => {
    const dir = fresh();
    expect(await codeOf(() => client.remove({ path: `${dir}/nope` }))).toBe(Code.NotFound);
    expect((await client.remove({ path: `${dir}/nope`, missingOk: true })).removedCount).toBe(0n);
  });
});

/** A Watch stream being read in the background. */
function watchStream(request: WatchInit) {
  const abort = new AbortController();
  const messages: WatchResponse[] = [];
  const state: { error?: ConnectError; ended: boolean } = { ended: false };
  const pump = (async () => {
    try {
      for await (const message of client.watch(request, { signal: abort.signal })) messages.push(message);
    } catch (error) {
      state.error = ConnectError.from(error);
    } finally {
      state.ended = true;
    }
  })();
  const events = (): WatchEvent[] => messages.flatMap((m) => (m.kind.case === "events" ? m.kind.value.events : []));
  return {
    messages,
    state,
    events,
    /** Events as "TYPE path" (and "<- old" for renames), easy to compare. */
    summary: () => events().map((e) => `${WatchEventType[e.type]} ${e.path}${e.oldPath ? ` <- ${e.oldPath}` : ""}`),
    started: () => waitFor(() => messages[0]?.kind.case === "started"),
    async close() {
      abort.abort();
      await pump;
    },
  };
}

describe("Watch", () => {
  const open: { close(): Promise<void> }[] = [];
  const watch = (request: WatchInit) => {
    const w = watchStream(request);
    open.push(w);
    return w;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((w) => w.close()));
  });

  it("starts with `started`, then reports create, write, rename and remove in debounced batches", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/existing`), "x");
    const w = watch({ path: dir, debounceMs: 50 });
    await w.started();
    const started = w.messages[0];
    expect(started?.kind.case === "started" && started.kind.value.entry?.path).toBe(dir);

    fs.writeFileSync(abs(`${dir}/new.txt`), "1");
    await waitFor(() => w.events().length >= 1);
    fs.appendFileSync(abs(`${dir}/existing`), "more");
    await waitFor(() => w.events().length >= 2);
    fs.renameSync(abs(`${dir}/new.txt`), abs(`${dir}/renamed.txt`));
    await waitFor(() => w.events().length >= 3);
    fs.unlinkSync(abs(`${dir}/existing`));
    await waitFor(() => w.events().length >= 4);
    await sleep(150);
    expect(w.summary()).toEqual([
      `CREATE ${dir}/new.txt`,
      `WRITE ${dir}/existing`,
      `RENAME ${dir}/renamed.txt <- ${dir}/new.txt`,
      `REMOVE ${dir}/existing`,
    ]);
    const created = w.events()[0];
    expect(created?.entry).toMatchObject({ path: `${dir}/new.txt`, type: EntryType.FILE, sizeBytes: 1n });
    expect(w.events()[3]?.entry).toBeUndefined();
  });

  it("coalesces a burst into one event per path, and drops what came and went within the window", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/busy`), "");
    const w = watch({ path: dir, debounceMs: 200 });
    await w.started();
    for (let i = 0; i < 20; i++) fs.appendFileSync(abs(`${dir}/busy`), `${i}\n`);
    fs.writeFileSync(abs(`${dir}/flash`), "here and gone");
    fs.unlinkSync(abs(`${dir}/flash`));
    fs.writeFileSync(abs(`${dir}/stays`), "");
    await waitFor(() => w.events().length >= 2);
    await sleep(300);
    expect(w.summary()).toEqual([`WRITE ${dir}/busy`, `CREATE ${dir}/stays`]);
    expect(w.messages.filter((m) => m.kind.case === "events")).toHaveLength(1);
  });

  it("reports an editor's atomic save (temporary file renamed over the target) as a WRITE", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/doc.md`), "v1");
    const w = watch({ path: dir, debounceMs: 80 });
    await w.started();
    fs.writeFileSync(abs(`${dir}/doc.md.tmp~`), "v2");
    fs.renameSync(abs(`${dir}/doc.md.tmp~`), abs(`${dir}/doc.md`));
    await waitFor(() => w.events().length >= 1);
    await client.writeFile({ path: `${dir}/doc.md`, content: text("v3") });
    await waitFor(() => w.events().length >= 2);
    await sleep(150);
    expect(w.summary()).toEqual([`WRITE ${dir}/doc.md`, `WRITE ${dir}/doc.md`]);
    expect(w.events()[1]?.entry?.sizeBytes).toBe(2n);
  });

  it("watches recursively: new directories and their contents, renamed directories, and removed trees", async () => {
    const dir = fresh();
    const w = watch({ path: dir, recursive: true, debounceMs: 50 });
    await w.started();
    fs.mkdirSync(abs(`${dir}/a/b`), { recursive: true });
    fs.writeFileSync(abs(`${dir}/a/b/f.txt`), "f");
    await waitFor(() => w.summary().includes(`CREATE ${dir}/a/b/f.txt`));
    fs.appendFileSync(abs(`${dir}/a/b/f.txt`), "more");
    await waitFor(() => w.summary().includes(`WRITE ${dir}/a/b/f.txt`));
    fs.renameSync(abs(`${dir}/a`), abs(`${dir}/c`));
    await waitFor(() => w.summary().includes(`RENAME ${dir}/c <- ${dir}/a`));
    fs.writeFileSync(abs(`${dir}/c/b/g.txt`), "g");
    await waitFor(() => w.summary().includes(`CREATE ${dir}/c/b/g.txt`));
    fs.rmSync(abs(`${dir}/c`), { recursive: true });
    await waitFor(() => w.summary().includes(`REMOVE ${dir}/c`));
    await sleep(150);
    expect(w.summary()).toEqual([
      `CREATE ${dir}/a`,
      `CREATE ${dir}/a/b`,
      `CREATE ${dir}/a/b/f.txt`,
      `WRITE ${dir}/a/b/f.txt`,
      `RENAME ${dir}/c <- ${dir}/a`,
      `CREATE ${dir}/c/b/g.txt`,
      `REMOVE ${dir}/c`,
    ]);
  });

  it("without recursive reports only the directory's own entries", async () => {
    const dir = fresh();
    fs.mkdirSync(abs(`${dir}/sub`));
    const w = watch({ path: dir, debounceMs: 50 });
    await w.started();
    fs.writeFileSync(abs(`${dir}/sub/deep.txt`), "x");
    fs.writeFileSync(abs(`${dir}/top.txt`), "x");
    await waitFor(() => w.events().length >= 1);
    await sleep(200);
    expect(w.summary()).toEqual([`CREATE ${dir}/top.txt`]);
  });

  it("skips hidden entries unless asked, and excluded paths (gitignore syntax)", async () => {
    const dir = fresh();
    fs.mkdirSync(abs(`${dir}/node_modules`));
    fs.mkdirSync(abs(`${dir}/.cache`));
    const w = watch({ path: dir, recursive: true, debounceMs: 50, exclude: ["node_modules/", "*.log", "/build"] });
    const all = watch({ path: dir, recursive: true, debounceMs: 50, includeHidden: true });
    await w.started();
    await all.started();
    fs.writeFileSync(abs(`${dir}/node_modules/pkg.js`), "");
    fs.writeFileSync(abs(`${dir}/debug.log`), "");
    fs.writeFileSync(abs(`${dir}/build`), "");
    fs.writeFileSync(abs(`${dir}/.env`), "");
    fs.writeFileSync(abs(`${dir}/.cache/x`), "");
    fs.writeFileSync(abs(`${dir}/main.ts`), "");
    await waitFor(() => w.events().length >= 1 && all.summary().includes(`CREATE ${dir}/.cache/x`));
    await sleep(200);
    expect(w.summary()).toEqual([`CREATE ${dir}/main.ts`]);
    expect(all.summary()).toEqual(
      expect.arrayContaining([`CREATE ${dir}/.env`, `CREATE ${dir}/.cache/x`, `CREATE ${dir}/debug.log`]),
    );
  });

  it("sends keepalives while nothing happens", async () => {
    const dir = fresh();
    const w = watch({ path: dir });
    await w.started();
    await waitFor(() => w.messages.some((m) => m.kind.case === "keepalive"), 3_000);
    expect(w.events()).toEqual([]);
  });

  it("ends with NOT_FOUND when the watched directory is removed", async () => {
    const dir = fresh();
    fs.mkdirSync(abs(`${dir}/watched`));
    const w = watch({ path: `${dir}/watched`, debounceMs: 30 });
    await w.started();
    fs.rmdirSync(abs(`${dir}/watched`));
    await waitFor(() => w.state.ended);
    expect(w.state.error?.code).toBe(Code.NotFound);
  });

  it("watches a single file across atomic saves, and ends with NOT_FOUND after it is removed", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/one.txt`), "1");
    fs.writeFileSync(abs(`${dir}/other.txt`), "1");
    const w = watch({ path: `${dir}/one.txt`, debounceMs: 30 });
    await w.started();
    fs.writeFileSync(abs(`${dir}/other.txt`), "2");
    await client.writeFile({ path: `${dir}/one.txt`, content: text("2") });
    await waitFor(() => w.events().length >= 1);
    await client.writeFile({ path: `${dir}/one.txt`, content: text("3") });
    await waitFor(() => w.events().length >= 2);
    fs.unlinkSync(abs(`${dir}/one.txt`));
    await waitFor(() => w.state.ended);
    expect(w.summary()).toEqual([`WRITE ${dir}/one.txt`, `WRITE ${dir}/one.txt`, `REMOVE ${dir}/one.txt`]);
    expect(w.state.error?.code).toBe(Code.NotFound);
  });

  it("tells a client that does not read that it fell behind (overflow) instead of queueing without bound", async () => {
    const dir = fresh();
    const abort = new AbortController();
    const watcher = await startWatch(create(WatchRequestSchema, { path: dir, debounceMs: 1 }), {
      resolver: new Resolver(t.workspace),
      logger: t.runner.context.logger,
      keepaliveMs: 60_000,
      signal: abort.signal,
    });
    const iterator = watcher.messages[Symbol.asyncIterator]();
    expect((await iterator.next()).value?.kind.case).toBe("started");
    // Nobody reads while 300 separate batches happen.
    for (let i = 0; i < 300; i++) {
      fs.writeFileSync(abs(`${dir}/f${i}`), "");
      await sleep(6);
    }
    await sleep(50);
    const kinds: string[] = [];
    for (;;) {
      const next = await Promise.race([iterator.next(), sleep(100).then(() => undefined)]);
      if (!next || next.done) break;
      kinds.push(next.value.kind.case ?? "");
    }
    abort.abort();
    expect(kinds.length).toBeLessThanOrEqual(260);
    expect(kinds).toContain("overflow");
  });

  it("ends every watch with UNAVAILABLE when the runner shuts down, and refuses changes afterwards", async () => {
    const other = await startTestRunner();
    try {
      const c = await other.client(FilesystemService);
      const abort = new AbortController();
      const messages: WatchResponse[] = [];
      let error: ConnectError | undefined;
      const pump = (async () => {
        try {
          for await (const m of c.watch({ path: "." }, { signal: abort.signal })) messages.push(m);
        } catch (e) {
          error = ConnectError.from(e);
        }
      })();
      await waitFor(() => messages.length > 0);
      await other.runner.shutdown(100, "test");
      await pump;
      expect(error?.code).toBe(Code.Unavailable);
      expect(await codeOf(() => c.writeFile({ path: "f", content: text("x") }))).toBe(Code.Unavailable);
      expect(await codeOf(() => c.makeDirectory({ path: "d" }))).toBe(Code.Unavailable);
      expect(await codeOf(() => c.stat({ path: "." }))).toBe("ok");
    } finally {
      await other.close();
    }
  });
});

describe("Upload and Download", () => {
  const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

  type HeaderInit = Extract<UploadInit["kind"], { case: "header" }>["value"];
  async function* uploadOf(header: HeaderInit, chunks: Uint8Array[], fail?: Error): AsyncGenerator<UploadInit> {
    yield { kind: { case: "header", value: header } };
    for (const chunk of chunks) yield { kind: { case: "chunk", value: chunk } };
    if (fail) throw fail;
  }

  it("uploads in chunks, checks size and SHA-256, and answers with the new entry", async () => {
    const dir = fresh();
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const chunks = [data.subarray(0, 1_000_000), data.subarray(1_000_000, 3_000_000), data.subarray(3_000_000)];
    const res = await client.upload(
      uploadOf({ path: `${dir}/up.bin`, sizeBytes: BigInt(data.length), sha256: sha256(data), mode: 0o640 }, chunks),
    );
    expect(res).toMatchObject({ created: true, writtenBytes: BigInt(data.length), sha256: sha256(data) });
    expect(res.entry).toMatchObject({ path: `${dir}/up.bin`, sizeBytes: BigInt(data.length), mode: 0o640 });
    expect(sha256(fs.readFileSync(abs(`${dir}/up.bin`)))).toBe(sha256(data));
    expect(leftovers(dir)).toEqual([]);
  });

  it("fails with DATA_LOSS on a wrong size or checksum and leaves the target untouched", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/f`), "original");
    const data = text("replacement");
    const short = await codeOf(() => client.upload(uploadOf({ path: `${dir}/f`, sizeBytes: 100n }, [data])));
    expect(short).toBe(Code.DataLoss);
    const long = await codeOf(() => client.upload(uploadOf({ path: `${dir}/f`, sizeBytes: 3n }, [data])));
    expect(long).toBe(Code.DataLoss);
    const badSum = await codeOf(() => client.upload(uploadOf({ path: `${dir}/f`, sha256: "0".repeat(64) }, [data])));
    expect(badSum).toBe(Code.DataLoss);
    expect(fs.readFileSync(abs(`${dir}/f`), "utf8")).toBe("original");
    expect(leftovers(dir)).toEqual([]);
  });

  it("leaves no file behind when the client breaks off an upload", async () => {
    const dir = fresh();
    const abort = new AbortController();
    async function* broken() {
      yield { kind: { case: "header", value: { path: `${dir}/partial.bin` } } } as UploadInit;
      for (let i = 0; i < 4; i++) yield { kind: { case: "chunk", value: randomBytes(256 * 1024) } } as UploadInit;
      await sleep(100);
      abort.abort();
      await sleep(1_000);
    }
    expect(await codeOf(() => client.upload(broken(), { signal: abort.signal }))).toBe(Code.Canceled);
    await waitFor(() => leftovers(dir).length === 0);
    expect(fs.readdirSync(abs(dir))).toEqual([]);
    // A client stream that fails mid-way is no better.
    const failed = await codeOf(() =>
      client.upload(uploadOf({ path: `${dir}/partial.bin` }, [randomBytes(1000)], new Error("disk gone"))),
    );
    expect(failed).not.toBe("ok");
    await waitFor(() => leftovers(dir).length === 0);
    expect(fs.readdirSync(abs(dir))).toEqual([]);
  });

  it("applies conditions, refuses more bytes than the disk has free, and a stream that does not start with a header", async () => {
    const dir = fresh();
    fs.writeFileSync(abs(`${dir}/f`), "x");
    const exists = await codeOf(() =>
      client.upload(uploadOf({ path: `${dir}/f`, condition: { case: "mustNotExist", value: true } }, [text("y")])),
    );
    expect(exists).toBe(Code.AlreadyExists);
    const stale = await codeOf(() =>
      client.upload(uploadOf({ path: `${dir}/f`, condition: { case: "expectedVersion", value: "old" } }, [text("y")])),
    );
    expect(stale).toBe(Code.FailedPrecondition);
    const tooBig = await codeOf(() => client.upload(uploadOf({ path: `${dir}/huge`, sizeBytes: 1n << 60n }, [])));
    expect(tooBig).toBe(Code.ResourceExhausted);
    expect(fs.existsSync(abs(`${dir}/huge`))).toBe(false);
    async function* headless() {
      yield { kind: { case: "chunk", value: text("data") } } as UploadInit;
    }
    expect(await codeOf(() => client.upload(headless()))).toBe(Code.InvalidArgument);
    expect(fs.readFileSync(abs(`${dir}/f`), "utf8")).toBe("x");
  });

  it("downloads a file or a range: header, chunks of at most 1 MiB, trailer with the SHA-256", async () => {
    const dir = fresh();
    const data = randomBytes(2 * 1024 * 1024 + 5);
    fs.writeFileSync(abs(`${dir}/d.bin`), data);
    const collect = async (req: { path: string; offset?: bigint; lengthBytes?: bigint }) => {
      const messages: DownloadResponse[] = [];
      for await (const m of client.download(req)) messages.push(m);
      return messages;
    };
    const all = await collect({ path: `${dir}/d.bin` });
    expect(all[0]?.kind.case).toBe("header");
    expect(all.at(-1)?.kind.case).toBe("trailer");
    const chunks = all.flatMap((m) => (m.kind.case === "chunk" ? [m.kind.value] : []));
    expect(chunks.every((c) => c.byteLength <= 1024 * 1024)).toBe(true);
    expect(sha256(Buffer.concat(chunks))).toBe(sha256(data));
    const trailer = all.at(-1);
    expect(trailer?.kind.case === "trailer" && trailer.kind.value.sha256).toBe(sha256(data));
    const header = all[0];
    expect(header?.kind.case === "header" && header.kind.value.entry?.sizeBytes).toBe(BigInt(data.length));

    const range = await collect({ path: `${dir}/d.bin`, offset: 1000n, lengthBytes: 1_500_000n });
    const rangeBytes = Buffer.concat(range.flatMap((m) => (m.kind.case === "chunk" ? [m.kind.value] : [])));
    expect(rangeBytes.equals(data.subarray(1000, 1_501_000))).toBe(true);
    const rangeHeader = range[0];
    expect(rangeHeader?.kind.case === "header" && rangeHeader.kind.value.lengthBytes).toBe(1_500_000n);
    expect(await codeOf(() => collect({ path: `${dir}/d.bin`, offset: BigInt(data.length + 1) }))).toBe(
      Code.OutOfRange,
    );
    expect(await codeOf(() => collect({ path: dir }))).toBe(Code.FailedPrecondition);
  });

  it("ends a download with ABORTED when the file changes in place, but sends the old content of a file replaced atomically", async () => {
    const dir = fresh();
    const data = randomBytes(32 * 1024 * 1024);
    fs.writeFileSync(abs(`${dir}/f`), data);
    let sawChunk = false;
    const inPlace = await codeOf(async () => {
      for await (const m of client.download({ path: `${dir}/f` })) {
        if (m.kind.case === "chunk" && !sawChunk) {
          sawChunk = true;
          fs.appendFileSync(abs(`${dir}/f`), "tail");
        }
      }
    });
    expect(inPlace).toBe(Code.Aborted);

    fs.writeFileSync(abs(`${dir}/f`), data);
    const hash = createHash("sha256");
    let replaced = false;
    for await (const m of client.download({ path: `${dir}/f` })) {
      if (m.kind.case !== "chunk") continue;
      hash.update(m.kind.value);
      if (!replaced) {
        replaced = true;
        await client.writeFile({ path: `${dir}/f`, content: text("new and short") });
      }
    }
    expect(hash.digest("hex")).toBe(sha256(data));
    expect(fs.readFileSync(abs(`${dir}/f`), "utf8")).toBe("new and short");
  });

  it("moves 1 GiB through Upload and Download without holding it in memory", async () => {
    // Forced collections between samples, so that what is measured is memory held, not
    // garbage V8 has not collected yet.
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const totalBytes = 1024 * 1024 * 1024;
    const chunkBytes = 1024 * 1024;
    gc();
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => {
      gc();
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 100);
    try {
      const pattern = randomBytes(chunkBytes);
      const sent = createHash("sha256");
      async function* generated() {
        yield { kind: { case: "header", value: { path: "big.bin", sizeBytes: BigInt(totalBytes) } } } as UploadInit;
        for (let i = 0; i < totalBytes / chunkBytes; i++) {
          const chunk = Buffer.from(pattern);
          chunk.writeUInt32LE(i, 0);
          sent.update(chunk);
          yield { kind: { case: "chunk", value: chunk } } as UploadInit;
        }
      }
      let started = performance.now();
      const uploaded = await client.upload(generated());
      const uploadMs = performance.now() - started;
      const expected = sent.digest("hex");
      expect(uploaded.sha256).toBe(expected);
      expect(fs.statSync(abs("big.bin")).size).toBe(totalBytes);
      const uploadPeakMb = (peak - baseline) / 1e6;

      started = performance.now();
      const downloaded = await downloadRaw("big.bin", { pauseAfterChunks: 256, pauseMs: 500 });
      const downloadMs = performance.now() - started;
      const peakMb = (peak - baseline) / 1e6;
      console.info(
        `1 GiB: upload ${Math.round(uploadMs)} ms (peak +${uploadPeakMb.toFixed(0)} MB), ` +
          `download ${Math.round(downloadMs)} ms (peak +${peakMb.toFixed(0)} MB over both)`,
      );
      expect(downloaded.bytes).toBe(totalBytes);
      expect(downloaded.sha256).toBe(expected);
      expect(downloaded.trailerSha256).toBe(expected);
      expect(peakMb).toBeLessThan(200);
    } finally {
      clearInterval(sampler);
      fs.rmSync(abs("big.bin"), { force: true });
    }
  }, 120_000);
});

/**
 * Downloads over a bare HTTP/2 gRPC stream (no compression), reading with backpressure.
 *
 * The Connect client is not used here for two reasons found while measuring: it accepts gzip,
 * so the server compresses every chunk (1 GiB of random bytes then takes about 50 s), and
 * connect-es 2.3.0 keeps every message of a server stream reachable until the stream ends
 * (Promise.race against a long-lived promise in runStreamingCall; connectrpc/connect-es#1524),
 * which would measure the client library instead of the runner.
 */
async function downloadRaw(
  path: string,
  options: { pauseAfterChunks: number; pauseMs: number },
): Promise<{ bytes: number; sha256: string; trailerSha256: string }> {
  const token = await t.token();
  const session = connectHttp2(t.url);
  try {
    const stream = session.request({
      ":method": "POST",
      ":path": `/${FilesystemService.typeName}/Download`,
      "content-type": "application/grpc+proto",
      te: "trailers",
      "grpc-accept-encoding": "identity",
      authorization: `Bearer ${token}`,
    });
    const body = toBinary(DownloadRequestSchema, create(DownloadRequestSchema, { path }));
    const frame = Buffer.alloc(5 + body.byteLength);
    frame.writeUInt32BE(body.byteLength, 1);
    frame.set(body, 5);
    stream.end(frame);
    let status: string | undefined;
    stream.on("response", (headers) => {
      status ??= headers["grpc-status"] as string | undefined;
    });
    stream.on("trailers", (trailers) => {
      status = trailers["grpc-status"] as string | undefined;
    });
    const hash = createHash("sha256");
    let bytes = 0;
    let chunks = 0;
    let trailerSha256 = "";
    // Envelopes (1 flag byte, 4 length bytes, the message) arrive split across DATA frames.
    const parts: Buffer[] = [];
    let buffered = 0;
    let need: number | undefined;
    const take = (n: number): Buffer => {
      const joined = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
      parts.length = 0;
      if (joined.byteLength > n) parts.push(joined.subarray(n));
      buffered -= n;
      return joined.subarray(0, n);
    };
    for await (const data of stream as AsyncIterable<Buffer>) {
      parts.push(data);
      buffered += data.byteLength;
      for (;;) {
        if (need === undefined) {
          if (buffered < 5) break;
          need = take(5).readUInt32BE(1);
        }
        if (buffered < need) break;
        const message = fromBinary(DownloadResponseSchema, take(need));
        need = undefined;
        if (message.kind.case === "chunk") {
          hash.update(message.kind.value);
          bytes += message.kind.value.byteLength;
          if (++chunks === options.pauseAfterChunks) await sleep(options.pauseMs);
        } else if (message.kind.case === "trailer") {
          trailerSha256 = message.kind.value.sha256;
        }
      }
    }
    expect(status).toBe("0");
    return { bytes, sha256: hash.digest("hex"), trailerSha256 };
  } finally {
    session.close();
  }
}
