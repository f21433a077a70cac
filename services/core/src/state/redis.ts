import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { CommitResult, RangeOptions, StateStore, StoredValue, Transaction } from "./store.js";

/** Options for {@link createRedisStore}. */
export interface RedisStoreOptions {
  /** `redis://[[user]:password@]host[:port][/db]`. */
  url: string;
  /** Prepended to every key and pub/sub channel (e.g. `devex:`), so that deployments can share a Redis. */
  keyPrefix: string;
  /** Where connection losses and recoveries are logged. */
  logger?: Logger;
  /** How long {@link StateStore.ping} waits for the answer before reporting false. Default 1000. */
  pingTimeoutMs?: number;
}

/**
 * How long Redis remembers a commit's outcome, so that a commit resent after a lost
 * connection (ioredis resends unanswered commands) returns its first outcome instead of
 * running twice and conflicting with itself.
 */
const commitMemoryMs = 10 * 60_000;

/** The longest wait between two reconnection attempts. */
const maxReconnectDelayMs = 2000;

/**
 * KEYS: the commit's marker, then the keys checked, deleted, put, the indexes removed from, added to.
 * ARGV: the five counts, how long to keep the marker, then the checked versions, a value and a
 * ttl in ms (-1 for none) per put, the members removed, the members added.
 * Answers `1:<version of each put>,...`, or `0:<number of the failed check>`.
 */
const commitScript = `
local done = redis.call('GET', KEYS[1])
if done then return done end
local nChecks, nDeletes, nPuts = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local nRemoves, nAdds = tonumber(ARGV[4]), tonumber(ARGV[5])
local k, a = 1, 6
for i = 1, nChecks do
  if tonumber(redis.call('HGET', KEYS[k + i], 'v') or '0') ~= tonumber(ARGV[a + i]) then
    return '0:' .. i
  end
end
k, a = k + nChecks, a + nChecks
for i = 1, nDeletes do redis.call('DEL', KEYS[k + i]) end
k = k + nDeletes
local versions = {}
for i = 1, nPuts do
  local key = KEYS[k + i]
  local version = tonumber(redis.call('HGET', key, 'v') or '0') + 1
  redis.call('HSET', key, 'v', version, 'd', ARGV[a + 2 * i - 1])
  local ttl = tonumber(ARGV[a + 2 * i])
  if ttl >= 0 then redis.call('PEXPIRE', key, ttl) else redis.call('PERSIST', key) end
  versions[i] = version
end
k, a = k + nPuts, a + 2 * nPuts
for i = 1, nRemoves do redis.call('ZREM', KEYS[k + i], ARGV[a + i]) end
k, a = k + nRemoves, a + nRemoves
for i = 1, nAdds do redis.call('ZADD', KEYS[k + i], 0, ARGV[a + i]) end
local result = '1:' .. table.concat(versions, ',')
redis.call('SET', KEYS[1], result, 'PX', ARGV[6])
return result
`;

/** KEYS[1]: the counter; ARGV[1]: the window in ms. Answers the count and the ms left. */
const hitScript = `
local count = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1], 'NX')
return {count, redis.call('PTTL', KEYS[1])}
`;

/** KEYS: the value hashes. Answers `{version, data}` per key, read at one instant. */
const getManyScript = `
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, 'v', 'd') end
return out
`;

/** The scripts {@link createRedisStore} defines on its connection. */
interface StateScripts {
  stateCommit(numberOfKeys: number, ...keysAndArgs: (string | number)[]): Promise<string>;
  stateHit(key: string, windowMs: number): Promise<[number, number]>;
  stateGetMany(numberOfKeys: number, ...keys: string[]): Promise<[string | null, string | null][]>;
}

/**
 * The Redis state store, for several core replicas. A value is a hash `{v: version, d: data}`,
 * an index a sorted set with every score 0 (so members sort by bytes), a commit one Lua
 * script. Resolves at once, without waiting for Redis: {@link StateStore.ping} answers false
 * until both connections are up, and commands issued while Redis is unreachable (at start or
 * during a restart) wait and run once it is back.
 */
export async function createRedisStore(options: RedisStoreOptions): Promise<StateStore> {
  const { keyPrefix, logger } = options;
  const pingTimeoutMs = options.pingTimeoutMs ?? 1000;
  const valueKey = (key: string) => `${keyPrefix}v:${key}`;
  const indexKey = (index: string) => `${keyPrefix}i:${index}`;
  const hitKey = (key: string) => `${keyPrefix}h:${key}`;
  const markerKey = (id: string) => `${keyPrefix}c:${id}`;
  const channelName = (channel: string) => `${keyPrefix}${channel}`;

  const client = new Redis(options.url, {
    retryStrategy: (attempt) => Math.min(attempt * 100, maxReconnectDelayMs),
    // Wait through an outage of any length rather than failing commands after N attempts.
    maxRetriesPerRequest: null,
    enableOfflineQueue: true,
    autoResendUnfulfilledCommands: true,
    // Commands issued in the same tick go out in one write: under load, one system call
    // carries many calls' reads instead of one each.
    enableAutoPipelining: true,
  });
  client.defineCommand("stateCommit", { lua: commitScript });
  client.defineCommand("stateHit", { lua: hitScript, numberOfKeys: 1 });
  client.defineCommand("stateGetMany", { lua: getManyScript, readOnly: true });
  const scripts = client as Redis & StateScripts;
  // A connection in subscriber mode takes no other commands; it resubscribes after reconnecting.
  const subscriber = client.duplicate({ autoResubscribe: true });
  let closing = false;
  watchConnection(client, "commands", logger, () => closing);
  watchConnection(subscriber, "subscriber", logger, () => closing);

  /** The listeners of each subscribed channel, and the SUBSCRIBE that made it so. */
  const channels = new Map<string, { listeners: Set<(message: string) => void>; subscribed: Promise<unknown> }>();
  subscriber.on("message", (channel: string, message: string) => {
    for (const listener of [...(channels.get(channel)?.listeners ?? [])]) {
      try {
        listener(message);
      } catch (error) {
        logger?.error({ err: error, channel }, "state subscriber failed");
      }
    }
  });

  const assertOpen = () => {
    if (closing) throw new Error("state store is closed");
  };
  const toStored = (version: string | null | undefined, data: string | null | undefined): StoredValue | undefined =>
    version == null || data == null ? undefined : { value: data, version: Number(version) };

  return {
    driver: "redis",
    async get(key) {
      assertOpen();
      const [version, data] = await client.hmget(valueKey(key), "v", "d");
      return toStored(version, data);
    },
    async getMany(keys) {
      assertOpen();
      if (keys.length === 0) return [];
      const rows = await scripts.stateGetMany(keys.length, ...keys.map(valueKey));
      return keys.map((_, i) => toStored(rows[i]?.[0], rows[i]?.[1]));
    },
    async commit(transaction: Transaction): Promise<CommitResult> {
      assertOpen();
      const checks = transaction.checks ?? [];
      const deletes = transaction.deletes ?? [];
      const puts = transaction.puts ?? [];
      const removes = transaction.indexRemoves ?? [];
      const adds = transaction.indexAdds ?? [];
      const keys = [
        markerKey(randomUUID()),
        ...checks.map((check) => valueKey(check.key)),
        ...deletes.map(valueKey),
        ...puts.map((put) => valueKey(put.key)),
        ...removes.map((entry) => indexKey(entry.index)),
        ...adds.map((entry) => indexKey(entry.index)),
      ];
      const args = [
        checks.length,
        deletes.length,
        puts.length,
        removes.length,
        adds.length,
        commitMemoryMs,
        ...checks.map((check) => check.version),
        ...puts.flatMap((put) => [put.value, put.ttlMs === undefined ? -1 : Math.max(0, Math.ceil(put.ttlMs))]),
        ...removes.map((entry) => entry.member),
        ...adds.map((entry) => entry.member),
      ];
      const reply = await scripts.stateCommit(keys.length, ...keys, ...args);
      const [status, detail = ""] = splitOnce(reply, ":");
      if (status === "0") {
        const check = checks[Number(detail) - 1];
        if (!check) throw new Error(`unexpected commit reply from Redis: ${reply}`);
        return { ok: false, conflictKey: check.key };
      }
      const newVersions = detail === "" ? [] : detail.split(",").map(Number);
      const versions: Record<string, number> = {};
      puts.forEach((put, i) => {
        versions[put.key] = newVersions[i] ?? Number.NaN;
      });
      return { ok: true, versions };
    },
    async range(index, { after, prefix, limit }: RangeOptions) {
      assertOpen();
      if (limit <= 0) return [];
      return client.zrangebylex(indexKey(index), lowerBound(after, prefix), upperBound(prefix), "LIMIT", 0, limit);
    },
    async count(index) {
      assertOpen();
      return client.zcard(indexKey(index));
    },
    async hit(key, windowMs) {
      assertOpen();
      const [count, leftMs] = await scripts.stateHit(hitKey(key), Math.max(1, Math.ceil(windowMs)));
      return { count, resetAtMs: Date.now() + Math.max(0, leftMs) };
    },
    async publish(channel, message) {
      assertOpen();
      await client.publish(channelName(channel), message);
    },
    async subscribe(channel, listener) {
      assertOpen();
      const name = channelName(channel);
      let entry = channels.get(name);
      if (!entry) {
        entry = { listeners: new Set(), subscribed: subscriber.subscribe(name) };
        channels.set(name, entry);
      }
      // A wrapper of its own, so that the same listener subscribed twice is removed once per call.
      const subscription = (message: string) => listener(message);
      entry.listeners.add(subscription);
      const current = entry;
      const unsubscribe = async () => {
        current.listeners.delete(subscription);
        if (current.listeners.size > 0 || channels.get(name) !== current) return;
        channels.delete(name);
        if (!closing) await subscriber.unsubscribe(name);
      };
      try {
        await current.subscribed;
      } catch (error) {
        await unsubscribe().catch(() => undefined);
        throw error;
      }
      return unsubscribe;
    },
    async ping() {
      if (closing || client.status !== "ready" || subscriber.status !== "ready") return false;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<false>((resolve) => {
        timer = setTimeout(resolve, pingTimeoutMs, false);
      });
      try {
        return await Promise.race([
          client.ping().then(
            (reply) => reply === "PONG",
            () => false,
          ),
          timedOut,
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      if (closing) return;
      closing = true;
      await Promise.all([quit(client), quit(subscriber)]);
    },
  };
}

/** `[prefix` or `(after`, whichever is further: members must pass both. */
function lowerBound(after: string | undefined, prefix: string | undefined): string {
  if (after === undefined) return prefix ? `[${prefix}` : "-";
  if (prefix && Buffer.compare(Buffer.from(after), Buffer.from(prefix)) < 0) return `[${prefix}`;
  return `(${after}`;
}

/** The byte 0xff never occurs in UTF-8, so `[prefix\xff` is above every member with that prefix. */
function upperBound(prefix: string | undefined): string | Buffer {
  return prefix ? Buffer.concat([Buffer.from(`[${prefix}`), Buffer.from([0xff])]) : "+";
}

function splitOnce(text: string, separator: string): [string, string?] {
  const at = text.indexOf(separator);
  return at === -1 ? [text] : [text.slice(0, at), text.slice(at + separator.length)];
}

/** Logs an outage once when it starts and once when it ends, not on every retry. */
function watchConnection(connection: Redis, name: string, logger: Logger | undefined, closing: () => boolean) {
  let down = false;
  const lost = (error?: Error) => {
    if (down || closing()) return;
    down = true;
    logger?.warn({ err: error, connection: name }, "redis unreachable; retrying");
  };
  // Without an error listener ioredis prints every failed attempt to the console.
  connection.on("error", (error: Error) => lost(error));
  connection.on("close", () => lost());
  connection.on("ready", () => {
    if (!down) return;
    down = false;
    logger?.info({ connection: name }, "redis reachable again");
  });
}

/** Quits politely when connected, otherwise drops the connection (and its queued commands). */
async function quit(connection: Redis): Promise<void> {
  if (connection.status === "ready") {
    try {
      await connection.quit();
      return;
    } catch {
      // fall through: the connection broke while quitting
    }
  }
  connection.disconnect();
}
