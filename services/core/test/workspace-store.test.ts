import { createHash, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import {
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createFilesystemWorkspaceStore,
  createS3WorkspaceStore,
  InvalidWorkspaceKeyError,
  WorkspaceObjectNotFoundError,
  type WorkspaceStore,
  WorkspaceStoreUnavailableError,
} from "../src/workspaces/index.js";
import { type SwiftServer, startSwiftServer } from "./support/swift-server.js";

/**
 * One contract for every workspace store driver: the filesystem one on a temporary folder,
 * the S3 one against a real Swift with s3api.
 */
const MIB = 1024 * 1024;
const BUCKET = "workspaces";

interface Harness {
  store: WorkspaceStore;
  /** Uploads begun and neither completed nor aborted (S3), or temporary files left (filesystem). */
  pendingUploads(): Promise<number>;
  /** Leaves what a put of `key` killed by a crash after `bytes` leaves: a temporary file, or a multipart upload with a part. */
  leaveCrashedUpload(key: string, bytes: number): Promise<void>;
  /** The folders under `prefix` (relative to it, sorted), for a store that has folders (filesystem). */
  folders?(prefix: string): Promise<string[]>;
  swift?: SwiftServer;
  /** A second store on the same data with a short timeout and no retries (S3). */
  impatient?: WorkspaceStore;
  stop(): Promise<void>;
}

const drivers: { name: string; start(): Promise<Harness> }[] = [
  {
    name: "filesystem",
    async start() {
      const root = await mkdtemp(join(tmpdir(), "devex-workspaces-"));
      const store = await createFilesystemWorkspaceStore({ root: join(root, "store") });
      return {
        store,
        async pendingUploads() {
          const entries = await readdir(join(root, "store"), { recursive: true });
          return entries.filter((entry) => entry.split("/").at(-1)?.startsWith(".devex-tmp-")).length;
        },
        async leaveCrashedUpload(key, bytes) {
          const directory = dirname(join(root, "store", key));
          await mkdir(directory, { recursive: true });
          await writeFile(join(directory, `.devex-tmp-${randomUUID()}`), Buffer.alloc(bytes, 1));
        },
        async folders(prefix) {
          const base = join(root, "store", prefix);
          const entries = await readdir(base, { recursive: true, withFileTypes: true }).catch(() => []);
          return entries
            .filter((entry) => entry.isDirectory())
            .map((entry) => relative(base, join(entry.parentPath, entry.name)))
            .sort();
        },
        async stop() {
          await store.close();
          await rm(root, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: "s3",
    async start() {
      const swift = await startSwiftServer();
      const base = {
        endpoint: swift.endpoint,
        region: swift.region,
        bucket: BUCKET,
        accessKeyId: swift.accessKeyId,
        secretAccessKey: swift.secretAccessKey,
        forcePathStyle: true,
      };
      const store = await untilAvailable(() =>
        createS3WorkspaceStore({ ...base, partSizeBytes: 5 * MIB, createBucket: true }),
      );
      const impatient = await createS3WorkspaceStore({ ...base, requestTimeoutMs: 1_000, maxAttempts: 1 });
      const s3 = new S3Client({
        endpoint: swift.endpoint,
        region: swift.region,
        forcePathStyle: true,
        credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey },
      });
      return {
        store,
        swift,
        impatient,
        async pendingUploads() {
          const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }));
          return uploads.Uploads?.length ?? 0;
        },
        async leaveCrashedUpload(key, bytes) {
          const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
          await s3.send(
            new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId, PartNumber: 1, Body: Buffer.alloc(bytes, 1) }),
          );
        },
        async stop() {
          s3.destroy();
          await store.close();
          await impatient.close();
          await swift.stop();
        },
      };
    },
  },
];

/**
 * Swift's proxy answers its health check before its account and container servers listen; until
 * they do, it answers 503, which the store reports as unavailable.
 */
async function untilAvailable<T>(attempt: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 20_000;
  while (true) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof WorkspaceStoreUnavailableError) || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** Deterministic pseudo-random bytes, in chunks of `chunkBytes`, produced lazily. */
async function* generate(totalBytes: number, chunkBytes = 256 * 1024, seed = 1): AsyncGenerator<Uint8Array> {
  let state = seed;
  for (let offset = 0; offset < totalBytes; offset += chunkBytes) {
    const chunk = Buffer.allocUnsafe(Math.min(chunkBytes, totalBytes - offset));
    for (let i = 0; i < chunk.length; i += 4) {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      chunk.writeUInt32LE(state, i);
    }
    yield chunk;
  }
}

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function sha256Of(stream: AsyncIterable<Uint8Array>): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { bytes, sha256: hash.digest("hex") };
}

describe.each(drivers)("the $name workspace store", ({ name, start }) => {
  let harness: Harness;
  let store: WorkspaceStore;
  beforeAll(async () => {
    harness = await start();
    store = harness.store;
  });
  afterAll(async () => {
    await harness?.stop();
  });

  it("names its driver and answers a ping", async () => {
    expect(store.driver).toBe(name);
    expect(await store.ping()).toBe(true);
  });

  it("stores and returns bytes, and replaces them", async () => {
    const body = Buffer.from("hello, workspace");
    const put = await store.put("rt/hello.txt", body);
    expect(put).toEqual({ bytes: body.length, sha256: createHash("sha256").update(body).digest("hex") });
    expect((await collect(await store.get("rt/hello.txt"))).toString()).toBe("hello, workspace");
    await store.put("rt/hello.txt", Buffer.from("second"));
    expect((await collect(await store.get("rt/hello.txt"))).toString()).toBe("second");
    await store.put("rt/empty", new Uint8Array(0));
    expect((await collect(await store.get("rt/empty"))).length).toBe(0);
  });

  it("streams a 20 MiB body in and out, with its sha256 and progress", async () => {
    const expected = await sha256Of(generate(20 * MIB));
    const progress: number[] = [];
    const put = await store.put("big/snapshot.tar.zst", generate(20 * MIB), {
      onProgress: (bytes) => progress.push(bytes),
    });
    expect(put).toEqual(expected);
    expect(progress.at(-1)).toBe(20 * MIB);
    expect(progress.length).toBeGreaterThan(1);
    expect(await sha256Of(await store.get("big/snapshot.tar.zst"))).toEqual(expected);
    expect((await store.stat("big/snapshot.tar.zst"))?.bytes).toBe(20 * MIB);
    expect(await harness.pendingUploads()).toBe(0);
  });

  it("stats objects", async () => {
    const before = Date.now();
    await store.put("stat/one", Buffer.from("12345"));
    const info = await store.stat("stat/one");
    expect(info?.bytes).toBe(5);
    // Object stores keep whole seconds.
    expect(info?.modifiedAtMs).toBeGreaterThanOrEqual(before - 1_000);
    expect(info?.modifiedAtMs).toBeLessThanOrEqual(Date.now() + 1_000);
    expect(await store.stat("stat/missing")).toBeUndefined();
    expect(await store.stat("stat")).toBeUndefined();
  });

  it("throws WorkspaceObjectNotFoundError for a missing key", async () => {
    const error = await store.get("missing/nothing.tar.zst").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WorkspaceObjectNotFoundError);
    expect((error as WorkspaceObjectNotFoundError).key).toBe("missing/nothing.tar.zst");
  });

  it("lists in byte order, with exact prefixes and paging", async () => {
    const keys = [
      "ls/repl_a/b",
      "ls/repl_a/a",
      "ls/repl_a/z/deep",
      "ls/repl_a/a-b",
      "ls/repl_a/a.b",
      "ls/repl_a/é",
      "ls/repl_a/Z",
      "ls/repl_ab/x",
      "ls/repl_a.txt",
    ];
    for (const key of keys) await store.put(key, Buffer.from(key));
    const sorted = [
      "ls/repl_a/Z",
      "ls/repl_a/a",
      "ls/repl_a/a-b",
      "ls/repl_a/a.b",
      "ls/repl_a/b",
      "ls/repl_a/z/deep",
      "ls/repl_a/é",
    ];
    const all = await store.list("ls/repl_a/");
    expect(all.keys.map((object) => object.key)).toEqual(sorted);
    expect(all.nextAfter).toBeUndefined();
    expect(all.keys[0]?.bytes).toBe("ls/repl_a/Z".length);

    const paged: string[] = [];
    let after: string | undefined;
    let pages = 0;
    do {
      const page = await store.list("ls/repl_a/", { limit: 3, ...(after === undefined ? {} : { after }) });
      expect(page.keys.length).toBeLessThanOrEqual(3);
      paged.push(...page.keys.map((object) => object.key));
      after = page.nextAfter;
      pages++;
    } while (after !== undefined && pages < 10);
    expect(paged).toEqual(sorted);
    expect(pages).toBe(3);

    // A partial last segment is a plain string prefix.
    expect((await store.list("ls/repl_a")).keys.map((object) => object.key)).toEqual([
      "ls/repl_a.txt",
      ...sorted,
      "ls/repl_ab/x",
    ]);
    expect((await store.list("ls/nothing/")).keys).toEqual([]);
  });

  it("deletes idempotently", async () => {
    await store.put("del/one", Buffer.from("1"));
    await store.delete("del/one");
    expect(await store.stat("del/one")).toBeUndefined();
    await expect(store.delete("del/one")).resolves.toBeUndefined();
    await expect(store.delete("del/never/was")).resolves.toBeUndefined();
  });

  it("deletes a prefix and nothing else", async () => {
    for (const key of ["dp/repl_a/1", "dp/repl_a/2", "dp/repl_a/sub/3", "dp/repl_ab/keep", "dp/repl_a.keep"]) {
      await store.put(key, Buffer.from(key));
    }
    expect(await store.deletePrefix("dp/repl_a/")).toBe(3);
    expect((await store.list("dp/")).keys.map((object) => object.key)).toEqual(["dp/repl_a.keep", "dp/repl_ab/keep"]);
    expect(await store.deletePrefix("dp/repl_a/")).toBe(0);
    await expect(store.deletePrefix("dp/repl_a")).rejects.toBeInstanceOf(InvalidWorkspaceKeyError);
    await expect(store.deletePrefix("")).rejects.toBeInstanceOf(InvalidWorkspaceKeyError);
  });

  it("refuses bad keys", async () => {
    const bad = ["", "/abs", "a/../b", "..", "a//b", "a/", "a/./b", "nul\0byte", `long/${"x/".repeat(510)}`];
    for (const key of bad) {
      await expect(store.put(key, Buffer.from("x")), JSON.stringify(key)).rejects.toBeInstanceOf(
        InvalidWorkspaceKeyError,
      );
      await expect(store.get(key)).rejects.toBeInstanceOf(InvalidWorkspaceKeyError);
      await expect(store.stat(key)).rejects.toBeInstanceOf(InvalidWorkspaceKeyError);
      await expect(store.delete(key)).rejects.toBeInstanceOf(InvalidWorkspaceKeyError);
    }
    await expect(store.list("/abs/")).rejects.toBeInstanceOf(InvalidWorkspaceKeyError);
    await expect(store.list("a/../")).rejects.toBeInstanceOf(InvalidWorkspaceKeyError);
    // 1,024 bytes is still fine.
    const longest = `long/${"y".repeat(199)}/${"y".repeat(199)}/${"y".repeat(199)}/${"y".repeat(199)}/${"y".repeat(219)}`;
    expect(Buffer.byteLength(longest)).toBe(1_024);
    await store.put(longest, Buffer.from("ok"));
    expect((await store.stat(longest))?.bytes).toBe(2);
  });

  it("leaves nothing behind when a put is aborted mid-stream", async () => {
    await store.put("abort/kept", Buffer.from("old"));
    const controller = new AbortController();
    const reason = new Error("user went away");
    async function* body() {
      let sent = 0;
      for await (const chunk of generate(30 * MIB, MIB)) {
        yield chunk;
        sent += chunk.length;
        if (sent === 12 * MIB) controller.abort(reason);
      }
    }
    await expect(store.put("abort/big", body(), { signal: controller.signal })).rejects.toBe(reason);
    await expect(store.put("abort/kept", body(), { signal: controller.signal })).rejects.toBe(reason);
    expect(await store.stat("abort/big")).toBeUndefined();
    expect((await collect(await store.get("abort/kept"))).toString()).toBe("old");
    expect((await store.list("abort/")).keys.map((object) => object.key)).toEqual(["abort/kept"]);
    expect(await harness.pendingUploads()).toBe(0);
  });

  it("aborts a put whose body is stuck", async () => {
    const controller = new AbortController();
    async function* stuck() {
      yield Buffer.alloc(1024);
      await new Promise(() => {});
    }
    setTimeout(() => controller.abort(new Error("stop")), 100);
    await expect(store.put("stuck/one", stuck(), { signal: controller.signal })).rejects.toThrow("stop");
    expect(await store.stat("stuck/one")).toBeUndefined();
  });

  it("leaves nothing behind when the body fails midway", async () => {
    async function* failing() {
      let sent = 0;
      for await (const chunk of generate(20 * MIB, MIB)) {
        yield chunk;
        sent += chunk.length;
        if (sent >= 11 * MIB) throw new Error("disk read failed");
      }
    }
    await expect(store.put("fail/big", failing())).rejects.toThrow("disk read failed");
    expect(await store.stat("fail/big")).toBeUndefined();
    expect((await store.list("fail/")).keys).toEqual([]);
    expect(await harness.pendingUploads()).toBe(0);
  });

  it("removes the uploads a crash left: stale ones on request, all of them with their prefix, and the folders it empties", async () => {
    await store.put("crash/repl_a/snapshots/kept.json", Buffer.from("{}"));
    await harness.leaveCrashedUpload("crash/repl_a/snapshots/snap_1.tar.zst", 5 * MIB);
    await harness.leaveCrashedUpload("crash/repl_ab/snapshots/snap_2.tar.zst", MIB);
    // A crashed put is invisible to listings; a prefix ending in "/" never takes a neighbour's.
    expect((await store.list("crash/repl_a/")).keys.map((object) => object.key)).toEqual([
      "crash/repl_a/snapshots/kept.json",
    ]);
    expect(await harness.pendingUploads()).toBe(2);
    // An upload as fresh as a put in progress stays.
    expect(await store.abortUploads("crash/repl_a/", { startedBeforeMs: Date.now() - 60_000 })).toBe(0);
    expect(await harness.pendingUploads()).toBe(2);
    expect(await store.abortUploads("crash/repl_a/", { startedBeforeMs: Date.now() + 60_000 })).toBe(1);
    expect(await harness.pendingUploads()).toBe(1);
    expect((await store.stat("crash/repl_a/snapshots/kept.json"))?.bytes).toBe(2);

    expect(await store.deletePrefix("crash/repl_ab/")).toBe(0);
    expect(await harness.pendingUploads()).toBe(0);
    if (harness.folders) expect(await harness.folders("crash/")).toEqual(["repl_a", "repl_a/snapshots"]);
    await store.delete("crash/repl_a/snapshots/kept.json");
    if (harness.folders) expect(await harness.folders("")).not.toContain("crash");
    await expect(store.abortUploads("crash/repl_a")).rejects.toBeInstanceOf(InvalidWorkspaceKeyError);
  });

  // Outages only exist for a store behind a network.
  if (name === "s3")
    it("reports an outage as WorkspaceStoreUnavailableError and keeps the data", async () => {
      const swift = harness.swift as SwiftServer;
      const impatient = harness.impatient as WorkspaceStore;
      await store.put("outage/kept", Buffer.from("still here"));
      await swift.down();
      try {
        const started = Date.now();
        await expect(impatient.stat("outage/kept")).rejects.toBeInstanceOf(WorkspaceStoreUnavailableError);
        await expect(impatient.get("outage/kept")).rejects.toBeInstanceOf(WorkspaceStoreUnavailableError);
        await expect(impatient.put("outage/new", Buffer.from("x"))).rejects.toBeInstanceOf(
          WorkspaceStoreUnavailableError,
        );
        await expect(impatient.list("outage/")).rejects.toBeInstanceOf(WorkspaceStoreUnavailableError);
        const error = await impatient.delete("outage/kept").catch((e: unknown) => e);
        expect(error).toBeInstanceOf(WorkspaceStoreUnavailableError);
        expect((error as Error).cause).toBeDefined();
        expect(await impatient.ping()).toBe(false);
        expect(Date.now() - started).toBeLessThan(5_000);
      } finally {
        await swift.up();
      }
      expect(await impatient.ping()).toBe(true);
      expect((await collect(await impatient.get("outage/kept"))).toString()).toBe("still here");
      expect(await impatient.stat("outage/new")).toBeUndefined();
    });

  if (name === "s3")
    it("times out against a frozen store", async () => {
      const swift = harness.swift as SwiftServer;
      const impatient = harness.impatient as WorkspaceStore;
      swift.freeze();
      try {
        const started = Date.now();
        const error = await impatient.stat("outage/kept").catch((e: unknown) => e);
        expect(error).toBeInstanceOf(WorkspaceStoreUnavailableError);
        expect((error as Error).message).toMatch(/timed out/);
        expect(Date.now() - started).toBeLessThan(4_000);
      } finally {
        swift.resume();
      }
      expect((await impatient.stat("outage/kept"))?.bytes).toBe("still here".length);
    });
});
