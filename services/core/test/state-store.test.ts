import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type CommitResult,
  createEmbeddedStore,
  createRedisStore,
  type EmbeddedStoreOptions,
  type StateStore,
} from "../src/state/index.js";
import { type RedisServer, startRedisServer } from "./support/redis-server.js";

let redis: RedisServer;
const tempDirs: string[] = [];
/** Stores a test opened; closed after it whatever happened. */
let opened: StateStore[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
});
afterEach(async () => {
  await Promise.allSettled(opened.map((store) => store.close()));
  opened = [];
});
afterAll(async () => {
  await redis?.stop();
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "devex-state-"));
  tempDirs.push(dir);
  return dir;
}

function track(store: StateStore): StateStore {
  opened.push(store);
  return store;
}

async function openEmbedded(options: EmbeddedStoreOptions = {}): Promise<StateStore> {
  return track(await createEmbeddedStore(options));
}

async function openRedis(keyPrefix = `test:${randomUUID()}:`): Promise<StateStore> {
  return track(await createRedisStore({ url: redis.url, keyPrefix }));
}

/** Polls until the condition holds; fails after `timeoutMs`. */
async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** Adds one to a counter with a read-check-write loop; answers how many attempts conflicted. */
async function increment(store: StateStore, key: string): Promise<number> {
  for (let conflicts = 0; ; conflicts++) {
    const current = await store.get(key);
    const result = await store.commit({
      checks: [{ key, version: current?.version ?? 0 }],
      puts: [{ key, value: String(Number(current?.value ?? "0") + 1) }],
    });
    if (result.ok) return conflicts;
  }
}

const drivers: { name: string; open(): Promise<StateStore> }[] = [
  { name: "embedded in memory", open: () => openEmbedded() },
  { name: "embedded with a data dir", open: async () => openEmbedded({ dataDir: await tempDir() }) },
  { name: "redis", open: () => openRedis() },
];

describe.each(drivers)("state store contract: $name", ({ open }) => {
  let store: StateStore;
  beforeEach(async () => {
    store = await open();
  });

  it("answers undefined for a missing key", async () => {
    expect(await store.get("missing")).toBeUndefined();
    expect(await store.getMany(["missing", "other"])).toEqual([undefined, undefined]);
  });

  it("creates a key once with a check of version 0", async () => {
    const create = { checks: [{ key: "user", version: 0 }], puts: [{ key: "user", value: "ada" }] };
    expect(await store.commit(create)).toEqual({ ok: true, versions: { user: 1 } });
    expect(await store.get("user")).toEqual({ value: "ada", version: 1 });
    expect(await store.commit({ ...create, puts: [{ key: "user", value: "bob" }] })).toEqual({
      ok: false,
      conflictKey: "user",
    });
    expect(await store.get("user")).toEqual({ value: "ada", version: 1 });
  });

  it("applies nothing of a transaction whose check fails, and all of it once the checks hold", async () => {
    await store.commit({
      puts: [
        { key: "a", value: "1" },
        { key: "d", value: "keep" },
      ],
      indexAdds: [{ index: "idx", member: "m1" }],
    });
    const transaction = {
      puts: [
        { key: "a", value: "2" },
        { key: "c", value: "new" },
      ],
      deletes: ["d"],
      indexAdds: [{ index: "idx", member: "m2" }],
      indexRemoves: [{ index: "idx", member: "m1" }],
    };
    const stale = await store.commit({
      ...transaction,
      checks: [
        { key: "a", version: 1 },
        { key: "b", version: 3 },
      ],
    });
    expect(stale).toEqual({ ok: false, conflictKey: "b" });
    expect(await store.getMany(["a", "c", "d"])).toEqual([
      { value: "1", version: 1 },
      undefined,
      { value: "keep", version: 1 },
    ]);
    expect(await store.range("idx", { limit: 10 })).toEqual(["m1"]);

    const fresh = await store.commit({
      ...transaction,
      checks: [
        { key: "a", version: 1 },
        { key: "b", version: 0 },
      ],
    });
    expect(fresh).toEqual({ ok: true, versions: { a: 2, c: 1 } });
    expect(await store.getMany(["a", "c", "d"])).toEqual([
      { value: "2", version: 2 },
      { value: "new", version: 1 },
      undefined,
    ]);
    expect(await store.range("idx", { limit: 10 })).toEqual(["m2"]);
  });

  it("reports the first failing check", async () => {
    const result = await store.commit({
      checks: [
        { key: "x", version: 1 },
        { key: "y", version: 1 },
      ],
    });
    expect(result).toEqual({ ok: false, conflictKey: "x" });
  });

  it("increases the version by one on every write", async () => {
    for (let version = 1; version <= 3; version++) {
      const result = await store.commit({
        checks: [{ key: "k", version: version - 1 }],
        puts: [{ key: "k", value: `v${version}` }],
      });
      expect(result).toEqual({ ok: true, versions: { k: version } });
    }
    expect(await store.get("k")).toEqual({ value: "v3", version: 3 });
    expect(await store.commit({ checks: [{ key: "k", version: 2 }], puts: [{ key: "k", value: "old" }] })).toEqual({
      ok: false,
      conflictKey: "k",
    });
    const two = await store.commit({
      puts: [
        { key: "k", value: "v4" },
        { key: "other", value: "o" },
      ],
    });
    expect(two).toEqual({ ok: true, versions: { k: 4, other: 1 } });
  });

  it("deletes keys, after which they start again at version 1", async () => {
    await store.commit({ puts: [{ key: "gone", value: "1" }] });
    await store.commit({ puts: [{ key: "gone", value: "2" }] });
    expect(await store.commit({ checks: [{ key: "gone", version: 2 }], deletes: ["gone"] })).toEqual({
      ok: true,
      versions: {},
    });
    expect(await store.get("gone")).toBeUndefined();
    expect(await store.commit({ checks: [{ key: "gone", version: 0 }], puts: [{ key: "gone", value: "3" }] })).toEqual({
      ok: true,
      versions: { gone: 1 },
    });
    // A delete and a put of the same key in one transaction: the put wins, from version 1.
    expect(await store.commit({ deletes: ["gone"], puts: [{ key: "gone", value: "4" }] })).toEqual({
      ok: true,
      versions: { gone: 1 },
    });
    expect(await store.get("gone")).toEqual({ value: "4", version: 1 });
  });

  it("expires a put with a ttl, and the key can be created again", async () => {
    const start = Date.now();
    await store.commit({
      puts: [
        { key: "session", value: "s", ttlMs: 100 },
        { key: "user", value: "u" },
      ],
    });
    expect(await store.get("session")).toEqual({ value: "s", version: 1 });
    await waitFor(async () => (await store.get("session")) === undefined);
    expect(Date.now() - start).toBeGreaterThanOrEqual(95);
    expect(await store.getMany(["session", "user"])).toEqual([undefined, { value: "u", version: 1 }]);
    const again = await store.commit({
      checks: [{ key: "session", version: 0 }],
      puts: [{ key: "session", value: "t" }],
    });
    expect(again).toEqual({ ok: true, versions: { session: 1 } });
  });

  it("drops an earlier ttl when a key is written without one", async () => {
    await store.commit({ puts: [{ key: "k", value: "short", ttlMs: 50 }] });
    await store.commit({ puts: [{ key: "k", value: "long" }] });
    await sleep(150);
    expect(await store.get("k")).toEqual({ value: "long", version: 2 });
  });

  it("gets many keys in the order asked", async () => {
    await store.commit({
      puts: [
        { key: "a", value: "A" },
        { key: "b", value: "B" },
      ],
    });
    expect(await store.getMany(["b", "missing", "a", "b"])).toEqual([
      { value: "B", version: 1 },
      undefined,
      { value: "A", version: 1 },
      { value: "B", version: 1 },
    ]);
    expect(await store.getMany([])).toEqual([]);
  });

  it("ranges over an index in byte order with after, prefix and limit", async () => {
    const members = ["b", "a", "c", "ab", "abc", "b1", "a😀", "aÿ", "B"];
    await store.commit({ indexAdds: members.map((member) => ({ index: "names", member })) });
    const sorted = ["B", "a", "ab", "abc", "aÿ", "a😀", "b", "b1", "c"];
    expect(await store.range("names", { limit: 100 })).toEqual(sorted);
    expect(await store.range("names", { limit: 3 })).toEqual(["B", "a", "ab"]);
    expect(await store.range("names", { limit: 0 })).toEqual([]);
    expect(await store.range("names", { after: "ab", limit: 100 })).toEqual(["abc", "aÿ", "a😀", "b", "b1", "c"]);
    expect(await store.range("names", { after: "c", limit: 100 })).toEqual([]);
    expect(await store.range("names", { prefix: "a", limit: 100 })).toEqual(["a", "ab", "abc", "aÿ", "a😀"]);
    expect(await store.range("names", { prefix: "ab", after: "a", limit: 100 })).toEqual(["ab", "abc"]);
    expect(await store.range("names", { prefix: "ab", after: "ab", limit: 100 })).toEqual(["abc"]);
    expect(await store.range("names", { prefix: "a", after: "b", limit: 100 })).toEqual([]);
    expect(await store.range("names", { prefix: "b", limit: 1 })).toEqual(["b"]);
    expect(await store.range("names", { prefix: "zz", limit: 100 })).toEqual([]);

    const paged: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await store.range("names", { limit: 2, ...(after === undefined ? {} : { after }) });
      paged.push(...page);
      if (page.length < 2) break;
      after = page.at(-1);
    }
    expect(paged).toEqual(sorted);
    expect(await store.range("missing", { limit: 10 })).toEqual([]);
  });

  it("counts the members of an index", async () => {
    expect(await store.count("names")).toBe(0);
    await store.commit({ indexAdds: ["x", "y", "z"].map((member) => ({ index: "names", member })) });
    expect(await store.count("names")).toBe(3);
    await store.commit({ indexAdds: [{ index: "names", member: "x" }] });
    expect(await store.count("names")).toBe(3);
    await store.commit({ indexRemoves: [{ index: "names", member: "y" }] });
    expect(await store.count("names")).toBe(2);
    expect(await store.count("other")).toBe(0);
  });

  it("counts hits in fixed windows", async () => {
    const before = Date.now();
    const first = await store.hit("login:1.2.3.4", 150);
    expect(first.count).toBe(1);
    expect(first.resetAtMs).toBeGreaterThan(before);
    expect(first.resetAtMs).toBeLessThanOrEqual(Date.now() + 150 + 5);
    const second = await store.hit("login:1.2.3.4", 150);
    expect(second.count).toBe(2);
    expect(Math.abs(second.resetAtMs - first.resetAtMs)).toBeLessThanOrEqual(20);
    expect((await store.hit("login:5.6.7.8", 150)).count).toBe(1);
    expect((await store.hit("login:1.2.3.4", 150)).count).toBe(3);

    await sleep(Math.max(0, first.resetAtMs - Date.now()) + 30);
    const next = await store.hit("login:1.2.3.4", 150);
    expect(next.count).toBe(1);
    expect(next.resetAtMs).toBeGreaterThan(first.resetAtMs);
  });

  it("publishes to every subscriber of a channel until they unsubscribe", async () => {
    const a: string[] = [];
    const b: string[] = [];
    const other: string[] = [];
    const unsubscribeA = await store.subscribe("news", (message) => a.push(message));
    const unsubscribeB = await store.subscribe("news", (message) => b.push(message));
    await store.subscribe("other", (message) => other.push(message));
    await store.publish("news", "1");
    await store.publish("news", "2");
    await store.publish("other", "x");
    await waitFor(() => a.length === 2 && b.length === 2 && other.length === 1);
    expect(a).toEqual(["1", "2"]);
    expect(b).toEqual(["1", "2"]);
    expect(other).toEqual(["x"]);

    await unsubscribeA();
    await store.publish("news", "3");
    await waitFor(() => b.length === 3);
    expect(a).toEqual(["1", "2"]);

    await unsubscribeB();
    const c: string[] = [];
    await store.subscribe("news", (message) => c.push(message));
    await store.publish("news", "4");
    await waitFor(() => c.length === 1);
    expect(c).toEqual(["4"]);
    expect(a).toEqual(["1", "2"]);
    expect(b).toEqual(["1", "2", "3"]);
  });

  it("applies exactly one of concurrent commits racing on a version", async () => {
    const conflicts = await Promise.all(Array.from({ length: 20 }, () => increment(store, "counter")));
    expect(await store.get("counter")).toEqual({ value: "20", version: 20 });
    expect(conflicts.reduce((sum, n) => sum + n, 0)).toBeGreaterThan(0);
  });

  it("answers ping once connected, and not after close", async () => {
    await waitFor(() => store.ping());
    await store.close();
    expect(await store.ping()).toBe(false);
    await expect(store.get("k")).rejects.toThrow(/closed/);
    await store.close();
  });
});

describe("embedded store with a data dir", () => {
  it("reopens with values, versions, deletes and index membership", async () => {
    const dataDir = await tempDir();
    const first = await openEmbedded({ dataDir });
    await first.commit({
      puts: [
        { key: "a", value: "1" },
        { key: "b", value: "x" },
      ],
      indexAdds: [
        { index: "users", member: "u1" },
        { index: "users", member: "u2" },
      ],
    });
    await first.commit({
      checks: [{ key: "a", version: 1 }],
      puts: [{ key: "a", value: "2" }],
      deletes: ["b"],
      indexRemoves: [{ index: "users", member: "u1" }],
      indexAdds: [{ index: "users", member: "u3" }],
    });
    await first.hit("h", 60_000);
    await first.close();

    const second = await openEmbedded({ dataDir });
    expect(await second.getMany(["a", "b"])).toEqual([{ value: "2", version: 2 }, undefined]);
    expect(await second.range("users", { limit: 10 })).toEqual(["u2", "u3"]);
    expect(await second.count("users")).toBe(2);
    expect(await second.commit({ checks: [{ key: "a", version: 2 }], puts: [{ key: "a", value: "3" }] })).toEqual({
      ok: true,
      versions: { a: 3 },
    });
    // Hit counters live in memory only.
    expect((await second.hit("h", 60_000)).count).toBe(1);
  });

  it("keeps ttls as absolute times across a reopen", async () => {
    const dataDir = await tempDir();
    let nowMs = 1_000_000;
    const now = () => nowMs;
    const first = await openEmbedded({ dataDir, now });
    await first.commit({ puts: [{ key: "session", value: "s", ttlMs: 1000 }] });
    await first.close();

    nowMs += 500;
    const second = await openEmbedded({ dataDir, now });
    expect(await second.get("session")).toEqual({ value: "s", version: 1 });
    await second.close();

    nowMs += 501;
    const third = await openEmbedded({ dataDir, now });
    expect(await third.get("session")).toBeUndefined();
  });

  it("has a commit's journal line on disk when the commit resolves", async () => {
    const dataDir = await tempDir();
    const store = await openEmbedded({ dataDir });
    // Read synchronously as the commit resolves, before anything else could write the file.
    const journal = await store
      .commit({ puts: [{ key: "durable", value: "yes" }] })
      .then(() => readFileSync(join(dataDir, "state", "journal.jsonl"), "utf8"));
    expect(journal).toContain('"durable"');
    expect(journal.endsWith("\n")).toBe(true);
  });

  it("ignores a torn last journal line and appends cleanly after it", async () => {
    const dataDir = await tempDir();
    const journalPath = join(dataDir, "state", "journal.jsonl");
    const first = await openEmbedded({ dataDir });
    await first.commit({ puts: [{ key: "x", value: "1" }] });
    await first.close();
    await appendFile(journalPath, '{"seq":2,"puts":[{"key":"torn","val');

    const second = await openEmbedded({ dataDir });
    expect(await second.getMany(["x", "torn"])).toEqual([{ value: "1", version: 1 }, undefined]);
    await second.commit({ puts: [{ key: "y", value: "2" }] });
    await second.close();

    const lines = (await readFile(journalPath, "utf8")).split("\n");
    expect(lines.at(-1)).toBe("");
    for (const line of lines.slice(0, -1)) expect(() => JSON.parse(line)).not.toThrow();
    const third = await openEmbedded({ dataDir });
    expect(await third.getMany(["x", "y", "torn"])).toEqual([
      { value: "1", version: 1 },
      { value: "2", version: 1 },
      undefined,
    ]);
  });

  it("refuses a journal with a bad line before good ones", async () => {
    const dataDir = await tempDir();
    const first = await openEmbedded({ dataDir });
    await first.commit({ puts: [{ key: "x", value: "1" }] });
    await first.close();
    const journalPath = join(dataDir, "state", "journal.jsonl");
    const good = await readFile(journalPath, "utf8");
    await writeFile(journalPath, `garbage\n${good}`);
    await expect(createEmbeddedStore({ dataDir })).rejects.toThrow(/corrupt/);
    // The failed open released its lock.
    await writeFile(journalPath, good);
    expect(await (await openEmbedded({ dataDir })).get("x")).toEqual({ value: "1", version: 1 });
  });

  it("compacts a large journal into a snapshot on open and keeps the data", async () => {
    const dataDir = await tempDir();
    const journalPath = join(dataDir, "state", "journal.jsonl");
    const snapshotPath = join(dataDir, "state", "snapshot.json");
    const options = { dataDir, compactJournalBytes: 500 };
    const first = await openEmbedded(options);
    for (let i = 0; i < 30; i++) {
      await first.commit({
        puts: [
          { key: `k${i}`, value: `v${i}` },
          { key: "counter", value: String(i) },
        ],
        indexAdds: [{ index: "all", member: `k${i}` }],
        ...(i > 0 ? { indexRemoves: [{ index: "all", member: `k${i - 1}` }], deletes: [`k${i - 1}`] } : {}),
      });
    }
    await first.close();
    expect((await stat(journalPath)).size).toBeGreaterThan(500);

    const second = await openEmbedded(options);
    expect((await stat(journalPath)).size).toBe(0);
    expect((await stat(snapshotPath)).size).toBeGreaterThan(0);
    expect(await second.getMany(["k28", "k29", "counter"])).toEqual([
      undefined,
      { value: "v29", version: 1 },
      { value: "29", version: 30 },
    ]);
    expect(await second.range("all", { limit: 10 })).toEqual(["k29"]);
    await second.commit({ puts: [{ key: "counter", value: "after" }], indexAdds: [{ index: "all", member: "k30" }] });
    await second.close();

    const third = await openEmbedded(options);
    expect(await third.get("counter")).toEqual({ value: "after", version: 31 });
    expect(await third.range("all", { limit: 10 })).toEqual(["k29", "k30"]);
  });

  it("refuses a second open of the same data dir while the first is open", async () => {
    const dataDir = await tempDir();
    const first = await openEmbedded({ dataDir });
    await expect(createEmbeddedStore({ dataDir })).rejects.toThrow(new RegExp(`in use by process ${process.pid}`));
    await first.commit({ puts: [{ key: "k", value: "1" }] });
    await first.close();
    const second = await openEmbedded({ dataDir });
    expect(await second.get("k")).toEqual({ value: "1", version: 1 });
  });

  it("takes over the lock of a process that is gone", async () => {
    const dataDir = await tempDir();
    const first = await openEmbedded({ dataDir });
    await first.close();
    const deadPid = spawnSync(process.execPath, ["-e", ""]).pid;
    await writeFile(join(dataDir, "state", "lock"), String(deadPid));
    const store = await openEmbedded({ dataDir });
    expect(await readFile(join(dataDir, "state", "lock"), "utf8")).toBe(String(process.pid));
    expect(await store.ping()).toBe(true);
  });
});

/** When a commit was issued, relative to a Redis restart. */
type Phase = "before" | "down" | "restarting" | "after";

describe("redis store", () => {
  let admin: Redis;
  beforeAll(() => {
    admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    // Refused connections while the restart test has Redis down are expected.
    admin.on("error", () => undefined);
  });
  afterAll(() => {
    admin?.disconnect();
  });

  it("keeps every key and channel under its prefix", async () => {
    const prefixA = `test:${randomUUID()}:`;
    const a = await openRedis(prefixA);
    const b = await openRedis();
    await a.commit({ puts: [{ key: "k", value: "a" }], indexAdds: [{ index: "i", member: "m" }] });
    await a.hit("h", 10_000);
    expect(await b.get("k")).toBeUndefined();
    expect(await b.count("i")).toBe(0);
    const keys = await admin.keys(`${prefixA}*`);
    expect(keys.length).toBeGreaterThanOrEqual(3);
    expect((await admin.keys("*")).every((key) => key.startsWith("test:"))).toBe(true);

    const heardByB: string[] = [];
    const heardByA: string[] = [];
    await b.subscribe("events", (message) => heardByB.push(message));
    await a.subscribe("events", (message) => heardByA.push(message));
    await a.publish("events", "for a");
    await waitFor(() => heardByA.length === 1);
    await b.publish("events", "for b");
    await waitFor(() => heardByB.length === 1);
    expect(heardByA).toEqual(["for a"]);
    expect(heardByB).toEqual(["for b"]);
  });

  it("reloads its scripts after Redis forgets them", async () => {
    const store = await openRedis();
    await store.commit({ puts: [{ key: "k", value: "1" }] });
    await store.hit("h", 10_000);
    await store.getMany(["k"]);
    await admin.script("FLUSH");
    expect(await store.commit({ checks: [{ key: "k", version: 1 }], puts: [{ key: "k", value: "2" }] })).toEqual({
      ok: true,
      versions: { k: 2 },
    });
    expect((await store.hit("h", 10_000)).count).toBe(2);
    expect(await store.getMany(["k"])).toEqual([{ value: "2", version: 2 }]);
  });

  it("fails fast through a restart: commits while it is down fail at once, resolved ones survive, pub/sub and ping come back", async () => {
    const store = await openRedis();
    const received: string[] = [];
    await store.subscribe("events", (message) => received.push(message));
    let phase: Phase = "before";
    const commits: {
      key: string;
      phase: Phase;
      outcome: Promise<{ result?: CommitResult; error?: unknown; ms: number }>;
    }[] = [];
    let issuing = true;
    const issuer = (async () => {
      for (let i = 0; issuing; i++) {
        const key = `k${i}`;
        const issuedAt = Date.now();
        const outcome = store
          .commit({
            checks: [{ key, version: 0 }],
            puts: [{ key, value: String(i) }],
            indexAdds: [{ index: "all", member: key }],
          })
          .then(
            (result) => ({ result, ms: Date.now() - issuedAt }),
            (error: unknown) => ({ error, ms: Date.now() - issuedAt }),
          );
        commits.push({ key, phase, outcome });
        await sleep(5);
      }
    })();
    await waitFor(() => commits.length >= 20);

    let pingWhileDown: boolean | undefined;
    await redis.restart(async () => {
      phase = "down";
      pingWhileDown = await store.ping();
      await sleep(300);
    });
    phase = "restarting";
    await waitFor(() => store.ping(), 10_000);
    phase = "after";
    await waitFor(() => commits.filter((commit) => commit.phase === "after").length >= 5);
    issuing = false;
    await issuer;

    expect(pingWhileDown).toBe(false);
    const outcomes = await Promise.all(commits.map((commit) => commit.outcome));
    const inPhase = (wanted: Phase) => outcomes.filter((_, i) => commits[i]?.phase === wanted);
    // While Redis is down no commit waits for it: each fails at once, saying why.
    expect(inPhase("down").length).toBeGreaterThan(10);
    for (const { error, ms } of inPhase("down")) {
      expect(String(error)).toMatch(/Redis at 127\.0\.0\.1:\d+ is unreachable/);
      expect(ms).toBeLessThan(1000);
    }
    // Once it answers again, commits work; every resolved commit ran exactly once and is stored.
    for (const { result } of inPhase("after")) expect(result).toMatchObject({ ok: true });
    const stored = await store.getMany(commits.map((commit) => commit.key));
    outcomes.forEach(({ result }, i) => {
      if (result) expect(result).toEqual({ ok: true, versions: { [`k${i}`]: 1 } });
      if (result) expect(stored[i]).toEqual({ value: String(i), version: 1 });
      if (commits[i]?.phase === "down") expect(stored[i]).toBeUndefined();
    });
    expect(await store.count("all")).toBe(stored.filter(Boolean).length);

    // The subscriber connection resubscribes on its own schedule: publish until it hears.
    await waitFor(async () => {
      await store.publish("events", "after restart");
      return received.includes("after restart");
    }, 10_000);
  });
});
