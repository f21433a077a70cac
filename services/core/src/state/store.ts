/**
 * The state store: the one place core keeps users, sessions, API keys and repls. Drivers
 * (embedded, Redis) implement a few primitives; the typed records above them live once.
 *
 * Every key holds a string value with a version that starts at 1 and grows by one on each
 * write. A transaction checks versions and applies its writes atomically, so concurrent
 * core replicas cannot interleave a read-modify-write.
 */
export interface StoredValue {
  value: string;
  /** 1 on creation, +1 on every write. */
  version: number;
}

/** A version check: the key must be at this version; 0 means it must not exist. */
export interface VersionCheck {
  key: string;
  version: number;
}

/** A write in a transaction. */
export interface Put {
  key: string;
  value: string;
  /** The key disappears this long after the write (sessions, login states). */
  ttlMs?: number;
}

/** A member of an index: a lexicographically ordered set of strings. */
export interface IndexEntry {
  index: string;
  member: string;
}

/** Writes applied all together or not at all. */
export interface Transaction {
  checks?: VersionCheck[];
  puts?: Put[];
  deletes?: string[];
  indexAdds?: IndexEntry[];
  indexRemoves?: IndexEntry[];
}

/** The outcome of {@link StateStore.commit}. */
export type CommitResult =
  | {
      ok: true;
      /** The new version of every key written. */
      versions: Record<string, number>;
    }
  | {
      ok: false;
      /** The first key whose version check failed. */
      conflictKey: string;
    };

/** Options for {@link StateStore.range}. */
export interface RangeOptions {
  /** Only members greater than this one (exclusive), in byte order. */
  after?: string;
  /** Only members starting with this prefix. */
  prefix?: string;
  /** At most this many members. */
  limit: number;
}

/** A fixed-window counter, for rate limits. */
export interface Hit {
  /** Hits in the current window, this one included. */
  count: number;
  /** When the window ends, in ms since the epoch. */
  resetAtMs: number;
}

/** The primitives a state driver implements. */
export interface StateStore {
  /** The driver's name, for logs (`embedded`, `redis`). */
  readonly driver: string;
  get(key: string): Promise<StoredValue | undefined>;
  getMany(keys: readonly string[]): Promise<(StoredValue | undefined)[]>;
  /** Applies a transaction atomically if every check holds. */
  commit(transaction: Transaction): Promise<CommitResult>;
  /** Members of an index in byte order. */
  range(index: string, options: RangeOptions): Promise<string[]>;
  /** How many members an index has. */
  count(index: string): Promise<number>;
  /** Counts a hit in the window of `windowMs` that started with the first hit. */
  hit(key: string, windowMs: number): Promise<Hit>;
  /** Sends a message to every subscriber of the channel, in every core replica. */
  publish(channel: string, message: string): Promise<void>;
  /** Receives the channel's messages until the returned function is called. */
  subscribe(channel: string, listener: (message: string) => void): Promise<() => Promise<void>>;
  /** Whether the store answers right now (for health). */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}
