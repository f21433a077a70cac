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
  /**
   * How long a command may wait for Redis's answer before it fails, in ms. Default 5000. While
   * Redis is unreachable commands fail at once, without waiting.
   */
  commandTimeoutMs?: number;
  /** How long opening the store waits for Redis to answer before it fails, in ms. Default 10000. */
  connectTimeoutMs?: number;
  /**
   * Open the store even when Redis keeps its data in memory only (no append-only file and no
   * RDB snapshots), which loses every user, key and repl when Redis restarts; a warning is
   * logged. Default false: such a Redis is refused.
   */
  allowVolatile?: boolean;
}

/** The longest wait between two reconnection attempts. */
const maxReconnectDelayMs = 2000;

/**
 * KEYS: the keys checked, deleted, put, the indexes removed from, added to.
 * ARGV: the five counts, then the checked versions, a value and a ttl in ms (-1 for none) per
 * put, the members removed, the members added.
 * Answers `1:<version of each put>,...`, or `0:<number of the failed check>`.
 */
const commitScript = `
local nChecks, nDeletes, nPuts = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local nRemoves, nAdds = tonumber(ARGV[4]), tonumber(ARGV[5])
local k, a = 0, 5
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
return '1:' .. table.concat(versions, ',')
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
 * script. Resolves once Redis answers and is found to persist its data (see
 * {@link RedisStoreOptions.allowVolatile}). Commands never wait for an unreachable Redis: they
 * fail at once while it is away (a command in flight when the connection drops fails too; it
 * may or may not have run, like one that timed out) and work again once it is back.
 */
export async function createRedisStore(options: RedisStoreOptions): Promise<StateStore> {
  const { keyPrefix, logger } = options;
  const pingTimeoutMs = options.pingTimeoutMs ?? 1000;
  const commandTimeoutMs = options.commandTimeoutMs ?? 5000;
  const address = redisAddress(options.url);
  const valueKey = (key: string) => `${keyPrefix}v:${key}`;
  const indexKey = (index: string) => `${keyPrefix}i:${index}`;
  const hitKey = (key: string) => `${keyPrefix}h:${key}`;
  const channelName = (channel: string) => `${keyPrefix}${channel}`;

  const client = new Redis(options.url, {
    retryStrategy: (attempt) => Math.min(attempt * 100, maxReconnectDelayMs),
    // Fail fast: no command waits for a connection (they would pile up and hang every call
    // for the length of an outage), and none in flight is resent after one.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: commandTimeoutMs,
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
  const watches = new Map([
    [client, watchConnection(client, "commands", logger, () => closing)],
    [subscriber, watchConnection(subscriber, "subscriber", logger, () => closing)],
  ]);
  try {
    const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    await Promise.all([untilReady(client, connectTimeoutMs), untilReady(subscriber, connectTimeoutMs)]);
    await checkDurability(client, options.allowVolatile ?? false, logger);
  } catch (error) {
    closing = true;
    client.disconnect();
    subscriber.disconnect();
    throw new Error(`Redis at ${address}: ${errorText(error)}`, { cause: error });
  }

  /** Runs a command; its failure says which Redis failed and how: unreachable, too slow, or its own error. */
  const call = async <T>(command: () => Promise<T>, connection: Redis = client): Promise<T> => {
    try {
      return await command();
    } catch (error) {
      if (closing) throw new Error("state store is closed", { cause: error });
      const how =
        connection.status !== "ready"
          ? `is unreachable (${watches.get(connection)?.lastError() ?? `connection ${connection.status}`})`
          : errorText(error) === "Command timed out"
            ? `did not answer within ${commandTimeoutMs} ms`
            : `failed: ${errorText(error)}`;
      throw new Error(`Redis at ${address} ${how}`, { cause: error });
    }
  };

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
      const [version, data] = await call(() => client.hmget(valueKey(key), "v", "d"));
      return toStored(version, data);
    },
    async getMany(keys) {
      assertOpen();
      if (keys.length === 0) return [];
      const rows = await call(() => scripts.stateGetMany(keys.length, ...keys.map(valueKey)));
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
        ...checks.map((check) => check.version),
        ...puts.flatMap((put) => [put.value, put.ttlMs === undefined ? -1 : Math.max(0, Math.ceil(put.ttlMs))]),
        ...removes.map((entry) => entry.member),
        ...adds.map((entry) => entry.member),
      ];
      const reply = await call(() => scripts.stateCommit(keys.length, ...keys, ...args));
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
      return call(() =>
        client.zrangebylex(indexKey(index), lowerBound(after, prefix), upperBound(prefix), "LIMIT", 0, limit),
      );
    },
    async count(index) {
      assertOpen();
      return call(() => client.zcard(indexKey(index)));
    },
    async hit(key, windowMs) {
      assertOpen();
      const [count, leftMs] = await call(() => scripts.stateHit(hitKey(key), Math.max(1, Math.ceil(windowMs))));
      return { count, resetAtMs: Date.now() + Math.max(0, leftMs) };
    },
    async publish(channel, message) {
      assertOpen();
      await call(() => client.publish(channelName(channel), message));
    },
    async subscribe(channel, listener) {
      assertOpen();
      const name = channelName(channel);
      let entry = channels.get(name);
      if (!entry) {
        entry = { listeners: new Set(), subscribed: call(() => subscriber.subscribe(name), subscriber) };
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
        // While Redis is away there is no subscription to drop (one resubscribed later only
        // brings messages nobody listens to): nothing to fail the caller for.
        if (!closing) await subscriber.unsubscribe(name).catch(() => undefined);
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

/** What {@link watchConnection} learns about a connection. */
interface ConnectionWatch {
  /** The message of the last connection error (`connect ECONNREFUSED ...`) since it was last ready. */
  lastError(): string | undefined;
}

/** Logs an outage once when it starts and once when it ends, not on every retry. */
function watchConnection(
  connection: Redis,
  name: string,
  logger: Logger | undefined,
  closing: () => boolean,
): ConnectionWatch {
  let down = false;
  let lastError: string | undefined;
  const lost = (error?: Error) => {
    if (error) lastError = error.message;
    if (down || closing()) return;
    down = true;
    logger?.warn({ err: error, connection: name }, "redis unreachable; retrying");
  };
  // Without an error listener ioredis prints every failed attempt to the console.
  connection.on("error", (error: Error) => lost(error));
  connection.on("close", () => lost());
  connection.on("ready", () => {
    lastError = undefined;
    if (!down) return;
    down = false;
    logger?.info({ connection: name }, "redis reachable again");
  });
  return { lastError: () => lastError };
}

/** Resolves once the connection is ready; rejects after `timeoutMs`, with the last connection error. */
async function untilReady(connection: Redis, timeoutMs: number): Promise<void> {
  if (connection.status === "ready") return;
  let lastError: Error | undefined;
  let timer: NodeJS.Timeout | undefined;
  const onError = (error: Error) => {
    lastError = error;
  };
  let onReady: () => void = () => {};
  try {
    await new Promise<void>((resolve, reject) => {
      onReady = resolve;
      connection.on("ready", onReady);
      connection.on("error", onError);
      timer = setTimeout(() => {
        const detail = lastError ? ` (${lastError.message})` : "";
        reject(new Error(`it did not answer within ${timeoutMs} ms${detail}`));
      }, timeoutMs);
    });
  } finally {
    clearTimeout(timer);
    connection.off("ready", onReady);
    connection.off("error", onError);
  }
}

/**
 * Checks that Redis keeps its data across its own restart. Without an append-only file or RDB
 * snapshots a restart of Redis loses every user, API key and repl (and core then stops the
 * runners it no longer knows as orphans, unsaved): refused unless `allowVolatile`, then
 * warned about. Managed Redis services often disable CONFIG: then only a warning.
 */
async function checkDurability(client: Redis, allowVolatile: boolean, logger: Logger | undefined): Promise<void> {
  let appendOnly: string | undefined;
  let save: string | undefined;
  try {
    const [aof, rdb] = await Promise.all([client.config("GET", "appendonly"), client.config("GET", "save")]);
    appendOnly = aof[1];
    save = rdb[1];
  } catch (error) {
    logger?.warn(
      { err: error },
      "could not check whether Redis persists its data (CONFIG GET is refused): core needs a Redis with persistence (appendonly yes), or a restart of Redis loses every user, API key and repl",
    );
    return;
  }
  if (appendOnly === "yes") return;
  if (save) {
    logger?.warn(
      { save },
      "Redis persists with RDB snapshots only: a crash of Redis loses every write since its last snapshot; appendonly yes is recommended",
    );
    return;
  }
  const problem =
    'it keeps its data in memory only (appendonly no, save ""): a restart of Redis loses every user, API key and repl, and the runners of running repls are then stopped without a save';
  if (!allowVolatile) {
    throw new Error(`${problem}. Turn persistence on (appendonly yes), or start core with --allow-volatile-redis`);
  }
  logger?.warn(`--allow-volatile-redis: Redis ${problem}`);
}

/** `host:port` of a Redis URL, without its credentials, for messages. */
function redisAddress(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || "6379"}`;
  } catch {
    return "the configured URL";
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
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
