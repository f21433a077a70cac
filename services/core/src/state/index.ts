/** The state store: its interface and its two drivers. */

export { createEmbeddedStore, type EmbeddedStoreOptions } from "./embedded.js";
export { createRedisStore, type RedisStoreOptions } from "./redis.js";
export * from "./store.js";
